"""Training loop: fixed seeds, checkpoints every epoch, resume, one JSON line of metrics per epoch.

Several data sets (--dataset utkface,aaf) train together: each set is split on its own
(splits.split_sets), photos of a set that needs alignment go through training.chips (the
ones without a face are left out and counted), batches draw from all sets (by
--set-weights), and every epoch logs the validation metrics per set and pooled.
"""
import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from . import checkpoints, chips, data, splits, teacher
from .augment import augment
from .loss import TaskLoss, all_metrics
from .model import AgeGenderNet, load_onnx_weights


def predict(model, images, batch_size=512):
    """{output name: numpy [N, 1]} in eval mode."""
    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).contiguous(
                memory_format=torch.channels_last)
            outs.append({k: v.numpy() for k, v in model(x).items()})
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


@dataclass
class Loaded:
    """The run's images: samples of all sets, their preprocessed images, the pooled train and validation indices
    (photos without a face left out), and per set its splits.Part (with `how`, `val_photos` for a set that needed
    detection: see detection())."""
    samples: data.Samples
    images: object
    train: np.ndarray
    val: np.ndarray
    parts: list


def detection(part):
    """{"all": ..., "val": ...} detection summaries of a set that went through training.chips, else None."""
    if part.how is None:
        return None
    return {"all": chips.detection_summary(part.how),
            "val": chips.detection_summary(part.how, part.val_photos - part.start)}


def load_sets(split, cache, threads=1):
    """Loaded of a splits.SplitSpec: the split first (a wrong --fold fails at once), then each set's images from
    `cache` (aligned chips for the sets of data.NEEDS_ALIGNMENT, computed on first use by up to `threads`
    processes, and cached)."""
    samples, parts = splits.split_sets(split)
    arrays = []
    for part in parts:
        paths = samples.paths[part.start:part.stop]
        if part.name not in data.NEEDS_ALIGNMENT:
            arrays.append(data.preprocess_all(paths, cache))
            continue
        aligned = None
        if split.limit:                 # a smoke run on part of the set: the whole set's chips, when cached
            aligned = chips.cached_subset(paths, data.load(part.name, part.path).paths, cache)
        if aligned is None:
            aligned = chips.aligned_chips(paths, cache, workers=max(1, min(threads or 1, os.cpu_count())),
                                          progress=lambda done, total: print(f"{part.name}: detecting faces, "
                                                                             f"{done}/{total}", file=sys.stderr,
                                                                             flush=True))
        found = np.asarray(aligned.found)
        part.how, part.val_photos, part.landmarks = np.asarray(aligned.how), part.val, np.asarray(aligned.landmarks)
        part.train = part.train[found[part.train - part.start]]
        part.val = part.val[found[part.val - part.start]]
        arrays.append(aligned.images)
    images = arrays[0] if len(arrays) == 1 else data.ConcatImages(arrays)
    return Loaded(samples, images, np.concatenate([p.train for p in parts]).astype(np.int64),
                  np.concatenate([p.val for p in parts]).astype(np.int64), parts)


def load_dataset(split, cache, threads=1):
    """(samples, images, train indices, validation indices) of load_sets."""
    loaded = load_sets(split, cache, threads)
    return loaded.samples, loaded.images, loaded.train, loaded.val


def validation_metrics(outputs, ages, males, loaded):
    """(pooled all_metrics, {set: all_metrics} or None for one set) of predictions on loaded.val, in that order."""
    pooled = all_metrics(outputs, ages[loaded.val], males[loaded.val])
    if len(loaded.parts) == 1:
        return pooled, None
    per_set, offset = {}, 0
    for part in loaded.parts:
        rows = slice(offset, offset + len(part.val))
        offset += len(part.val)
        per_set[part.name] = all_metrics({k: v[rows] for k, v in outputs.items()}, ages[part.val], males[part.val])
    return pooled, per_set


def init_weights(model, path):
    """A second stage starts from a checkpoint's weights or from an exported ONNX file (weights/agegender.onnx)."""
    if path.endswith(".onnx"):
        from refimpl import onnx_format

        weights, _, _ = onnx_format.read(path)
        return load_onnx_weights(model, weights)
    return checkpoints.load_weights(model, checkpoints.load(path)["model"], path)


def epoch_order(train_idx, weights, generator):
    """The training images of one epoch, in order: each once, shuffled (equal set weights), or drawn with
    replacement with probability proportional to weights [len(train_idx)]."""
    if weights is None:
        return train_idx[torch.randperm(len(train_idx), generator=generator).numpy()]
    drawn = torch.multinomial(torch.as_tensor(weights, dtype=torch.float64), len(train_idx), replacement=True,
                              generator=generator)
    return train_idx[drawn.numpy()]


def image_weights(loaded):
    """Per training image, its set's --set-weights weight; None when all are equal (every image once an epoch)."""
    if len({p.weight for p in loaded.parts}) <= 1:
        return None
    return np.concatenate([np.full(len(p.train), p.weight) for p in loaded.parts])


def train(args, log=print, loss_fn=None):
    """args: the namespace of `python -m training train` (stored with each checkpoint). loss_fn(out, age, male) ->
    (total, {head: term}): None = TaskLoss(--loss, --gender-weight), formula (3) by default; an experiment
    (experiments/) may pass its own."""
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    if args.protocol == "all":
        raise SystemExit("error: --protocol all validates on every image and leaves none to train on "
                         "(use it with evaluate; train with holdout, kfold or lopo)")
    model = AgeGenderNet().to(memory_format=torch.channels_last)
    if args.init:                       # a refused file fails before the data is read
        init_weights(model, args.init)
    split = splits.SplitSpec.from_args(args)
    loaded = load_sets(split, args.cache, args.threads)
    samples, images, train_idx, val_idx = loaded.samples, loaded.images, loaded.train, loaded.val
    ages, males = np.asarray(samples.ages, np.float32), np.asarray(samples.males, np.float32)
    log(f"data: {len(samples)} images, train {len(train_idx)}, validation {len(val_idx)} "
        f"({', '.join(f'{k} {v}' for k, v in split.describe(len(val_idx)).items() if k != 'n_val')})")
    for part in loaded.parts:
        found = detection(part)
        if len(loaded.parts) > 1 or found:
            log(f"  {part.name}: train {len(part.train)}, validation {len(part.val)}, weight {part.weight:g}"
                + (f"; {chips.format_detection(found['all'])}" if found else ""))
    if args.init:
        log(f"initialised from {args.init}")
    gender_targets = males
    if getattr(args, "distill", None):
        gender_targets, matched = teacher.mixed_targets(args.distill, samples.paths, males, train_idx,
                                                        args.distill_weight)
        log(f"distillation: {matched} of {len(train_idx)} training images get (1 - {args.distill_weight:g}) label + "
            f"{args.distill_weight:g} P_teacher(male) as their gender target ({args.distill})")
    if loss_fn is None:
        loss_fn = TaskLoss(getattr(args, "loss", "paper"), getattr(args, "gender_weight", 1.0))
    loss_params = list(loss_fn.parameters()) if isinstance(loss_fn, torch.nn.Module) else []
    weights = image_weights(loaded)
    # an exponential moving average of the weights (and BatchNorm statistics) is what gets evaluated and exported
    averaged = (torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(
        args.ema), use_buffers=True) if args.ema else None)
    evaluated = averaged.module if averaged is not None else model
    groups = [{"params": list(model.parameters())}]
    if loss_params:                     # the learned task weights: no weight decay pulling them to 1
        groups.append({"params": loss_params, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = max(1, len(train_idx) // args.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=args.epochs * steps_per_epoch,
                                                   pct_start=0.15)
    start_epoch, checkpoint = 0, os.path.join(args.out, "last.pt")
    if args.resume and os.path.exists(checkpoint):
        state = checkpoints.load(checkpoint)
        if state["args"]["epochs"] != args.epochs:
            raise SystemExit(f"error: {checkpoint} belongs to a {state['args']['epochs']}-epoch run (the learning-rate "
                             f"schedule spans it); resume with --epochs {state['args']['epochs']}")
        stored, stored_split = splits.stored_args(state["args"]), splits.SplitSpec.from_args(state["args"])
        if (stored_split.describe(0), stored_split.limit) != (split.describe(0), split.limit):
            raise SystemExit(f"error: {checkpoint} was trained on another split ({stored_split.describe(0)}, limit "
                             f"{stored_split.limit}); resume with the run's own --dataset, --protocol and split "
                             "options, or the validation images would be trained on")
        changed = [f"--{key.replace('_', '-')} {getattr(stored, key)}"
                   for key in ("set_weights", "loss", "gender_weight", "distill", "distill_weight")
                   if getattr(stored, key) != getattr(args, key, splits.STORED_DEFAULTS[key])]
        if changed:
            raise SystemExit(f"error: {checkpoint} was trained with {', '.join(changed)}; resume with the run's own "
                             "options")
        checkpoints.load_weights(model, state.get("training_model", state["model"]), checkpoint)
        if loss_params:
            loss_fn.load_state_dict(state["loss"])
        if averaged is not None:
            averaged.module.load_state_dict(state["model"])
            averaged.n_averaged.fill_(state["n_averaged"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        if "rng" in state:              # dropout draws from torch's global generator
            torch.set_rng_state(state["rng"])
        start_epoch = state["epoch"] + 1
        log(f"resumed from {checkpoint} at epoch {start_epoch}")
    generator = torch.Generator().manual_seed(args.seed)
    last_epoch = min(args.epochs, args.stop_after or args.epochs)
    for epoch in range(start_epoch, last_epoch):
        generator.manual_seed(args.seed * 1000 + epoch)          # resume gives the same batches
        order = epoch_order(train_idx, weights, generator)
        model.train()
        started, losses = time.time(), []
        bar = _progress(range(steps_per_epoch), f"epoch {epoch + 1}/{args.epochs}", args.progress)
        for step in bar:
            batch = np.sort(order[step * args.batch_size:(step + 1) * args.batch_size])
            x = augment(torch.from_numpy(np.asarray(images[batch])), generator)
            out = model(x.contiguous(memory_format=torch.channels_last), logits=True)
            loss, _ = loss_fn(out, torch.from_numpy(ages[batch]), torch.from_numpy(gender_targets[batch]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            if averaged is not None:
                averaged.update_parameters(model)
            losses.append(float(loss.detach()))
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        val, val_sets = validation_metrics(predict(evaluated, images[val_idx]), ages, males, loaded)
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "lr": schedule.get_last_lr()[0],
                  "seconds": round(time.time() - started, 1), "val": val}
        if val_sets is not None:
            record["val_sets"] = val_sets
        found = {p.name: detection(p)["val"] for p in loaded.parts if detection(p)}
        if found:
            record["detection"] = found
        if loss_params:
            record["log_variance"] = [float(v) for v in loss_fn.log_variance.detach()]
        with open(os.path.join(args.out, "log.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
        gender = val["ensemble"]["gender_acc"]
        line = f"epoch {epoch + 1}: loss {record['loss']:.3f}, val MAE {val['ensemble']['mae']:.2f} " \
               f"gender {'-' if gender is None else f'{gender:.3f}'}"
        for name, metrics in (val_sets or {}).items():
            g = metrics["ensemble"]["gender_acc"]
            line += f"; {name} {metrics['ensemble']['mae']:.2f} {'-' if g is None else f'{g:.3f}'}"
            if name in found:
                line += f" (faces in {found[name]['rate']:.1%} of its photos)"
        if val_sets is None and found:
            line += "".join(f" (faces in {v['rate']:.1%} of the {name} photos)" for name, v in found.items())
        log(f"{line} ({record['seconds']} s)")
        state = {"model": evaluated.state_dict(), "optimizer": optimizer.state_dict(),
                 "schedule": schedule.state_dict(), "epoch": epoch, "args": vars(args), "rng": torch.get_rng_state()}
        if averaged is not None:        # "model" is what evaluate and export read; resume needs the raw weights too
            state.update(training_model=model.state_dict(), n_averaged=int(averaged.n_averaged))
        if loss_params:                 # the learned task weights: resume needs them; export never reads them
            state["loss"] = loss_fn.state_dict()
        checkpoints.save(state, checkpoint)
    return evaluated


def _progress(iterable, description, enabled):
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=description, leave=False)
