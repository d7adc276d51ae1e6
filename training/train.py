"""Training loop: fixed seeds, checkpoints every epoch, resume, one JSON line of metrics per epoch."""
import json
import os
import time

import numpy as np
import torch

from . import checkpoints, data, splits
from .augment import augment
from .loss import all_metrics, paper_loss
from .model import AgeGenderNet


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


def load_dataset(args):
    """split_samples plus the preprocessed images (read after the split: a wrong --fold fails at once)."""
    samples, train_idx, val_idx = splits.split_samples(args)
    return samples, data.preprocess_all(samples.paths, args.cache), train_idx, val_idx


def train(args, log=print, loss_fn=paper_loss):
    """loss_fn: formula (3); training.gender_ceiling passes its gender terms alone."""
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    if args.protocol == "all":
        raise SystemExit("error: --protocol all validates on every image and leaves none to train on "
                         "(use it with evaluate; train with holdout, kfold or lopo)")
    init = checkpoints.load(args.init)["model"] if args.init else None     # a refused file fails before the data
    samples, images, train_idx, val_idx = load_dataset(args)
    ages, males = np.asarray(samples.ages, np.float32), np.asarray(samples.males, np.float32)
    log(f"data: {len(samples)} images, train {len(train_idx)}, validation {len(val_idx)} "
        f"({', '.join(f'{k} {v}' for k, v in splits.describe(args, len(val_idx)).items() if k != 'n_val')})")
    model = AgeGenderNet().to(memory_format=torch.channels_last)
    if args.init:                       # a second stage: start from another run's weights, with a new schedule
        checkpoints.load_weights(model, init, args.init)
        log(f"initialised from {args.init}")
    # an exponential moving average of the weights (and BatchNorm statistics) is what gets evaluated and exported
    averaged = (torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(
        args.ema), use_buffers=True) if args.ema else None)
    evaluated = averaged.module if averaged is not None else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = max(1, len(train_idx) // args.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=args.epochs * steps_per_epoch,
                                                   pct_start=0.15)
    start_epoch, checkpoint = 0, os.path.join(args.out, "last.pt")
    if args.resume and os.path.exists(checkpoint):
        state = checkpoints.load(checkpoint)
        if state["args"]["epochs"] != args.epochs:
            raise SystemExit(f"error: {checkpoint} belongs to a {state['args']['epochs']}-epoch run (the learning-rate "
                             f"schedule spans it); resume with --epochs {state['args']['epochs']}")
        stored = splits.stored_args(state["args"])
        if (splits.describe(stored, 0), stored.limit) != (splits.describe(args, 0), args.limit):
            raise SystemExit(f"error: {checkpoint} was trained on another split ({splits.describe(stored, 0)}, limit "
                             f"{stored.limit}); resume with the run's own --dataset, --protocol and split options, "
                             "or the validation images would be trained on")
        checkpoints.load_weights(model, state.get("training_model", state["model"]), checkpoint)
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
        order = train_idx[torch.randperm(len(train_idx), generator=generator).numpy()]
        model.train()
        started, losses = time.time(), []
        bar = _progress(range(steps_per_epoch), f"epoch {epoch + 1}/{args.epochs}", args.progress)
        for step in bar:
            batch = np.sort(order[step * args.batch_size:(step + 1) * args.batch_size])
            x = augment(torch.from_numpy(np.asarray(images[batch])), generator)
            out = model(x.contiguous(memory_format=torch.channels_last), logits=True)
            loss, _ = loss_fn(out, torch.from_numpy(ages[batch]), torch.from_numpy(males[batch]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            if averaged is not None:
                averaged.update_parameters(model)
            losses.append(float(loss.detach()))
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        val = all_metrics(predict(evaluated, images[val_idx]), ages[val_idx], males[val_idx])
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "lr": schedule.get_last_lr()[0],
                  "seconds": round(time.time() - started, 1), "val": val}
        with open(os.path.join(args.out, "log.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
        gender = val["ensemble"]["gender_acc"]
        log(f"epoch {epoch + 1}: loss {record['loss']:.3f}, val MAE {val['ensemble']['mae']:.2f} "
            f"gender {'-' if gender is None else f'{gender:.3f}'} ({record['seconds']} s)")
        state = {"model": evaluated.state_dict(), "optimizer": optimizer.state_dict(),
                 "schedule": schedule.state_dict(), "epoch": epoch, "args": vars(args), "rng": torch.get_rng_state()}
        if averaged is not None:        # "model" is what evaluate and export read; resume needs the raw weights too
            state.update(training_model=model.state_dict(), n_averaged=int(averaged.n_averaged))
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
