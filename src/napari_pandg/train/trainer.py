"""The patch-based trainer (single process or DDP under ``torchrun``).

Run folder (``cfg.out_dir``, default ``runs/<name>``)::

    config.yaml     the resolved configuration (defaults + file + overrides)
    split.csv       subject -> train / val / test
    metrics.jsonl   one JSON object per epoch ("kind": "epoch": loss, val_dice, lr, times)
                    and every ``log_every`` steps ("kind": "step")
    last.pt         after every epoch: model checkpoint + optimizer, scheduler, epoch,
                    RNG and method state (resume), written atomically
    best.pt         the checkpoint with the best validation pancreas Dice so far

Resuming (``resume: true``, the default) continues from ``last.pt`` after a crash or kill
and reproduces the metrics of an uninterrupted run: patches are a function of
``(seed, epoch, index)`` and method randomness of ``(seed, step, rank)``.

DDP: the same entry point under ``torchrun --nproc_per_node=N``. ``torch.distributed`` is
initialised from the torchrun environment (gloo on CPU, NCCL on GPU), a ``DistributedSampler``
splits each epoch's patches between ranks, DDP averages gradients, rank 0 validates and writes.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from napari_pandg.models.checkpoint import (
    DEFAULT_NORMALIZATION,
    ModelDescription,
    atomic_torch_save,
    check_label_map,
    checkpoint_dict,
    load_checkpoint,
    load_state_dict_checked,
    read_checkpoint_file,
)
from napari_pandg.models.networks import FeatureConcatNet, build_network, size_divisor
from napari_pandg.train.config import ConfigError, TrainConfig, dump_config
from napari_pandg.train.data import (
    Case,
    PatchDataset,
    load_cases,
    make_split,
    read_manifest,
    seed_for,
    select_rows,
)
from napari_pandg.train.methods import MaskGen, Method, make_method


@dataclass
class TrainResult:
    run_dir: Path
    best_path: Path | None
    last_path: Path
    best_dice: float
    best_epoch: int
    epochs_done: int
    history: list[dict[str, Any]] = field(default_factory=list)
    network: nn.Module | None = None
    cancelled: bool = False


# --------------------------------------------------------------------------- distributed
@dataclass
class Dist:
    world: int = 1
    rank: int = 0
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item()) / self.world


def setup_distributed(device_pref: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    here = False
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda")
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        here = True
    return Dist(world, dist.get_rank(), local, here)


def _device(pref: str, d: Dist) -> torch.device:
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("device cuda requested but no GPU is available; use device=cpu")
        return torch.device(f"cuda:{d.local_rank}" if d.world > 1 else pref)
    return torch.device(pref)


# --------------------------------------------------------------------------- helpers
def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],  # fmt: skip
        "python": list(random.getstate()[1]),
        "python_version": int(random.getstate()[0]),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    random.setstate((state["python_version"], tuple(int(v) for v in state["python"]), None))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    total = cfg.optim.epochs * cfg.optim.steps_per_epoch
    warm = min(cfg.optim.warmup_steps, total - 1)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=max(1, total - warm), eta_min=cfg.optim.min_lr
    )
    if warm <= 0:
        return cosine
    lin = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1e-3, total_iters=warm)
    return torch.optim.lr_scheduler.SequentialLR(opt, [lin, cosine], milestones=[warm])


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn last line after a kill
    return out


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, path)


def _fmt_time(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


_COMPARE = ("data", "model", "method", "seed", "init_checkpoint")


def _check_same_run(run_dir: Path, cfg: TrainConfig) -> None:
    import yaml

    saved_p = run_dir / "config.yaml"
    if not saved_p.exists():
        return
    saved = yaml.safe_load(saved_p.read_text()) or {}
    now = cfg.to_dict()
    diff = [k for k in _COMPARE if json.dumps(saved.get(k), sort_keys=True, default=str)
            != json.dumps(now.get(k), sort_keys=True, default=str)]  # fmt: skip
    if diff:
        raise ConfigError(
            f"{run_dir} holds a run with a different configuration ({', '.join(diff)} differ); "
            "resume with the same settings, or choose another out_dir, or set resume=false overwrite=true"
        )


@torch.no_grad()
def validate(
    net: nn.Module,
    cases: list[Case],
    patch: tuple[int, int, int],
    n_classes: int,
    overlap: float,
    sw_batch: int,
    device: torch.device,
) -> dict[str, Any]:
    """Mean foreground Dice over cases (sliding window on the training grid)."""
    from monai.inferers import sliding_window_inference

    from napari_pandg.metrics import dice

    net.eval()
    per_case = []
    for c in cases:
        x = torch.from_numpy(c.image)[None, None].to(device)
        logits = sliding_window_inference(x, patch, sw_batch, net, overlap=overlap, mode="gaussian")
        pred = torch.argmax(logits[0], 0).cpu().numpy()
        ds = [dice(pred == k, c.label == k) for k in range(1, n_classes)]
        per_case.append(float(np.mean(ds)))
    return {"dice": float(np.mean(per_case)) if per_case else float("nan"), "per_case": per_case}


# --------------------------------------------------------------------------- trainer
class Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        command: str | None = None,
        log: Callable[[str], None] | None = None,
        cancel: Callable[[], bool] | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.cfg = cfg
        # cancel(): checked between steps; a cancelled epoch is not saved, so `last.pt` holds the
        # last finished epoch and a resume repeats the cancelled one exactly (single process only)
        self.cancel = cancel
        self.on_epoch = on_epoch  # called with every epoch record (loss, val_dice, ...) on rank 0
        self.command = command if command is not None else " ".join(shlex.quote(a) for a in sys.argv)
        self.d = setup_distributed(cfg.device)
        self.device = _device(cfg.device, self.d)
        self._log = log or (lambda s: print(s, flush=True))
        self.run_dir = cfg.run_dir()
        self.patch = tuple(int(p) for p in cfg.data.patch_size)

    def log(self, msg: str) -> None:
        if self.d.main:
            self._log(msg)

    # ----------------------------------------------------------------- set-up
    def _prepare_run_dir(self) -> bool:
        """Returns True when resuming from last.pt."""
        last = self.run_dir / "last.pt"
        resuming = self.cfg.resume and last.exists()
        if last.exists() and not self.cfg.resume and not self.cfg.overwrite:
            raise FileExistsError(
                f"{self.run_dir} already holds a run (last.pt); resume it (resume=true), or "
                "pass overwrite=true to start over, or choose another out_dir"
            )
        if resuming:
            _check_same_run(self.run_dir, self.cfg)
        if self.d.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if not resuming:
                for f in ("metrics.jsonl", "best.pt", "last.pt"):
                    (self.run_dir / f).unlink(missing_ok=True)
            dump_config(self.cfg, self.run_dir / "config.yaml")
        self.d.barrier()
        return resuming

    def _stream_data(self) -> None:
        from napari_pandg.train.stream import PhantomStream

        cfg = self.cfg
        if self.method.needs_unlabeled:
            raise ConfigError(f"method {cfg.method.name} needs unlabelled target volumes from a manifest; "
                              "data.source=phantom has none")  # fmt: skip
        t0 = time.perf_counter()
        self.stream = PhantomStream(cfg.data, cfg.seed, DEFAULT_NORMALIZATION, renders=self.method.render_prob() > 0)
        self.split = {}
        self.train_cases = []
        self.val_cases = self.stream.validation_cases()
        self.unl_cases = []
        self.log(f"data: phantom stream (seed {cfg.seed}, variation {self.stream.settings['variation']}, "
                 f"render share {self.method.render_prob():.2f}), {len(self.val_cases)} validation subjects "
                 f"built in {time.perf_counter() - t0:.1f} s")  # fmt: skip

    def _data(self) -> None:
        cfg, dc = self.cfg, self.cfg.data
        if dc.source == "phantom":
            return self._stream_data()
        df = read_manifest(dc.manifest)
        self.split = make_split(df, dc, cfg.seed)
        train_rows = select_rows(df, self.split, "train", dc.train_centers, dc.train_sequences)
        if dc.max_train_subjects:
            subs = sorted(set(train_rows["subject"]))
            rng = np.random.default_rng(cfg.seed)
            keep = {subs[i] for i in rng.permutation(len(subs))[: dc.max_train_subjects]}
            train_rows = train_rows[train_rows["subject"].isin(keep)].reset_index(drop=True)
        val_rows = select_rows(
            df, self.split, "val", dc.val_centers or dc.train_centers, dc.val_sequences or dc.train_sequences
        )
        if cfg.val.max_cases:
            val_rows = val_rows.iloc[: cfg.val.max_cases]
        if train_rows.empty:
            raise ConfigError(
                f"{dc.manifest}: no labelled training volumes for centers {dc.train_centers} "
                f"sequences {dc.train_sequences} in the train split"
            )
        test_subjects = {s for s, v in self.split.items() if v == "test"}
        assert not test_subjects & set(train_rows["subject"]), "test subject in training data"
        if self.d.main:
            import pandas as pd

            pd.DataFrame(sorted(self.split.items()), columns=["subject", "split"]).to_csv(
                self.run_dir / "split.csv", index=False
            )
        norm = dict(DEFAULT_NORMALIZATION)
        t0 = time.perf_counter()
        self.train_cases = load_cases(train_rows, dc, norm, with_regions=self.method.needs_regions)
        self.val_cases = load_cases(val_rows, dc, norm)
        self.unl_cases: list[Case] = []
        if self.method.needs_unlabeled:
            unl_rows = select_rows(
                df, self.split, "train", dc.unlabeled_centers or dc.train_centers,
                dc.unlabeled_sequences or dc.train_sequences, labeled=False,
            )  # fmt: skip
            self.unl_cases = load_cases(unl_rows, dc, norm, with_label=False)
            if not self.unl_cases:
                raise ConfigError("no unlabelled volumes match data.unlabeled_centers/sequences")
        self.log(
            f"data: {len(self.train_cases)} training volumes ({train_rows['subject'].nunique()} "
            f"subjects), {len(self.val_cases)} validation, {len(self.unl_cases)} unlabelled, "
            f"{len(test_subjects)} test subjects held out; preprocessed in {time.perf_counter() - t0:.1f} s"
        )

    def _model(self) -> None:
        cfg = self.cfg
        self.n_classes = 1 + max(cfg.data.label_map.values())
        arch, kwargs = cfg.model.architecture, dict(cfg.model.kwargs)
        init_state = None
        if cfg.init_checkpoint:
            init = load_checkpoint(cfg.init_checkpoint)
            desc = init.description
            if not np.allclose(desc.spacing, cfg.data.spacing) or desc.normalization != DEFAULT_NORMALIZATION:
                raise ConfigError(
                    f"{cfg.init_checkpoint} was trained at spacing {list(desc.spacing)} mm with "
                    f"{desc.normalization['method']} normalisation; fine-tune with the same "
                    f"data.spacing (not {cfg.data.spacing})"
                )
            expected = {0: 0, **{v: k for k, v in sorted(cfg.data.label_map.items(), reverse=True)}}
            check_label_map(desc, expected, cfg.init_checkpoint)
            arch, kwargs = desc.architecture, dict(desc.arch_kwargs)
            net = init.network
            if isinstance(net, FeatureConcatNet):
                if not isinstance(self.method, MaskGen):
                    raise ConfigError(
                        f"{cfg.init_checkpoint} is a MaskGen model (frozen features); fine-tune it "
                        "with method.name=maskgen"
                    )
                self.method.features, self.method.spec = net.features, dict(desc.feature_extractor)
                net = net.seg
            init_state = net.state_dict()
        div = size_divisor(arch, kwargs)
        if any(p % div for p in self.patch):
            raise ConfigError(f"data.patch_size {list(self.patch)} must be divisible by {div} for {arch} {kwargs}")
        _seed_everything(cfg.seed)
        self.arch, self.arch_kwargs = arch, kwargs
        self.in_channels = self.method.in_channels()
        model = build_network(arch, kwargs, self.in_channels, self.n_classes)
        if init_state is not None:
            load_state_dict_checked(model, init_state, cfg.init_checkpoint, f"{arch}({kwargs})")
        self.model = model.to(self.device)
        self.method.setup(self.model, self.device)
        if self.d.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DDP(self.model, device_ids=ids)

    def description(self, val: dict[str, Any] | None = None) -> ModelDescription:
        cfg = self.cfg
        inv = {0: 0}
        for amos, idx in sorted(cfg.data.label_map.items()):
            inv.setdefault(int(idx), int(amos))
        upd = self.method.description_updates()
        return ModelDescription(
            name=cfg.name,
            architecture=self.arch,
            arch_kwargs=self.arch_kwargs,
            in_channels=self.in_channels,
            out_channels=self.n_classes,
            spacing=tuple(cfg.data.spacing),
            orientation="RAS",
            patch_size=self.patch,
            normalization=dict(DEFAULT_NORMALIZATION),
            label_map=inv,
            feature_extractor=upd.get("feature_extractor"),
            inference={"overlap": cfg.val.overlap, "sw_batch_size": cfg.val.sw_batch_size, "mode": "gaussian"},
            method=cfg.method.name,
            domains={"centers": list(cfg.data.train_centers), "sequences": list(cfg.data.train_sequences)},
            val_metrics=dict(val or {}),
            command=self.command,
            extra={"config": cfg.to_dict(), **self._train_data_info(),
                   "train_subjects": sorted(s for s, v in self.split.items() if v == "train"),
                   "test_subjects": sorted(s for s, v in self.split.items() if v == "test"),
                   "val_subjects": sorted(s for s, v in self.split.items() if v == "val")},  # fmt: skip
        )

    def _train_data_info(self) -> dict[str, Any]:
        if self.cfg.data.source != "phantom":
            return {}
        from napari_pandg.phantom import GENERATOR_VERSION

        return {"train_data": {"source": "phantom_stream", "seed": self.cfg.seed,
                               "generator_version": GENERATOR_VERSION, "settings": self.stream.settings,
                               "render_prob": self.method.render_prob(),
                               "note": "every training subject was generated on the fly (ids stream*); "
                                       "no file of any dataset was trained on"}}  # fmt: skip

    def _loaders(self, S: int, B: int) -> tuple[Any, Any, Any]:
        """(train loader, the object whose set_epoch selects the epoch, unlabelled loader)."""
        cfg, world = self.cfg, self.d.world
        if cfg.data.source == "phantom":
            from napari_pandg.train.stream import stream_loader

            loader, sampler, self.stream_ds = stream_loader(
                self.stream, cfg.optim.epochs, S * B * world, B, cfg.seed, self.method.augmentations(),
                self.method.render_prob(), cfg.data.num_workers, cfg.data.pos, cfg.data.neg, self.d.rank, world,
            )  # fmt: skip
            return loader, sampler, None
        ds = PatchDataset(self.train_cases, self.patch, S * B * world, cfg.seed, self.method.augmentations(),
                          cfg.data.pos, cfg.data.neg)  # fmt: skip
        sampler = (torch.utils.data.DistributedSampler(ds, num_replicas=world, rank=self.d.rank, shuffle=False)
                   if world > 1 else None)  # fmt: skip
        loader = torch.utils.data.DataLoader(ds, batch_size=B, sampler=sampler, shuffle=False,
                                             num_workers=cfg.data.num_workers, drop_last=True)  # fmt: skip
        unl_loader = None
        if self.unl_cases:
            uds = PatchDataset(self.unl_cases, self.patch, S * B * world, cfg.seed, [], labeled=False, stream=1)
            usam = (torch.utils.data.DistributedSampler(uds, num_replicas=world, rank=self.d.rank, shuffle=False)
                    if world > 1 else None)  # fmt: skip
            unl_loader = torch.utils.data.DataLoader(uds, batch_size=B, sampler=usam, shuffle=False,
                                                     num_workers=cfg.data.num_workers, drop_last=True)  # fmt: skip
        return loader, ds, unl_loader

    # ----------------------------------------------------------------- run
    def run(self) -> TrainResult:
        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        resuming = self._prepare_run_dir()
        self.method: Method = make_method(cfg)
        self._data()
        self._model()
        from monai.losses import DiceCELoss

        loss_fn = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True)
        opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        sched = make_scheduler(opt, cfg)
        S, E, B = cfg.optim.steps_per_epoch, cfg.optim.epochs, cfg.optim.batch_size
        start_epoch, best, best_epoch = 0, -1.0, 0
        last_p, best_p, jsonl = self.run_dir / "last.pt", self.run_dir / "best.pt", self.run_dir / "metrics.jsonl"
        history: list[dict[str, Any]] = []
        if resuming:
            ts = read_checkpoint_file(last_p).get("train_state")
            if not ts:
                raise ConfigError(f"{last_p} has no training state; cannot resume")
            raw = self.model.module if hasattr(self.model, "module") else self.model
            raw.load_state_dict(ts["model"])
            opt.load_state_dict(ts["optimizer"])
            sched.load_state_dict(ts["scheduler"])
            self.method.load_state_dict(ts.get("method", {}))
            start_epoch, best, best_epoch = int(ts["epoch"]), float(ts["best_dice"]), int(ts["best_epoch"])
            _set_rng_state(ts["rng"])
            kept = [r for r in _read_jsonl(jsonl) if int(r.get("epoch", 0)) <= start_epoch]
            if self.d.main:  # drop what a killed run logged after its last checkpoint
                _write_jsonl(jsonl, kept)
            history = [r for r in kept if r.get("kind") == "epoch"]
            self.log(f"resuming {self.run_dir} after epoch {start_epoch}/{E} (best Dice {best:.4f} @ {best_epoch})")
        else:
            self.log(f"training {cfg.name} ({cfg.method.name}) -> {self.run_dir}")

        loader, ds, unl_loader = self._loaders(S, B)

        end_epoch = E if cfg.stop_after_epochs is None else min(E, start_epoch + cfg.stop_after_epochs)
        t_run = time.perf_counter()
        epoch_times: list[float] = []
        self._local_losses: list[float] = []
        done = end_epoch
        cancelled = False
        for epoch in range(start_epoch, end_epoch):
            t_ep = time.perf_counter()
            ds.set_epoch(epoch)
            if unl_loader is not None:
                unl_loader.dataset.set_epoch(epoch)
            self.model.train()
            losses: list[float] = []
            extra: dict[str, list[float]] = {}
            unl_iter = iter(unl_loader) if unl_loader is not None else None
            for i, batch in enumerate(loader):
                if self.cancel is not None and self.d.world == 1 and self.cancel():
                    cancelled = True
                    break
                gstep = epoch * S + i
                gen = torch.Generator().manual_seed(seed_for(cfg.seed, 7, gstep, self.d.rank))
                batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
                unl = next(unl_iter)["image"].to(self.device) if unl_iter is not None else None
                loss, logs = self.method.loss(self.model, batch, loss_fn, gen, gstep, unl)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.optim.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
                opt.step()
                sched.step()
                self.method.after_step(self.model, gstep)
                lv = float(loss.detach())
                if not np.isfinite(lv):
                    raise FloatingPointError(f"loss became {lv} at epoch {epoch + 1} step {i + 1}; lower optim.lr")
                losses.append(lv)
                self._local_losses.append(lv)
                for k, v in logs.items():
                    extra.setdefault(k, []).append(float(v))
                if cfg.log_every and (gstep + 1) % cfg.log_every == 0 and self.d.main:
                    rec = {"kind": "step", "epoch": epoch + 1, "step": gstep + 1, "loss": lv,
                           "lr": opt.param_groups[0]["lr"], "time_s": round(time.perf_counter() - t_ep, 3)}  # fmt: skip
                    with open(jsonl, "a") as fh:
                        fh.write(json.dumps(rec) + "\n")
            if cancelled:
                done = epoch
                self.log(f"cancelled during epoch {epoch + 1}; {last_p} holds epoch {epoch} (resume repeats it)")
                break
            train_time = time.perf_counter() - t_ep
            ep_loss = self.d.mean(float(np.mean(losses)))
            rec: dict[str, Any] = {"kind": "epoch", "epoch": epoch + 1, "step": (epoch + 1) * S,
                                   "loss": ep_loss, "lr": opt.param_groups[0]["lr"]}  # fmt: skip
            for k, v in extra.items():
                rec[k] = self.d.mean(float(np.mean(v)))
            do_val = (epoch + 1) % max(1, cfg.val.every_epochs) == 0 or epoch + 1 == E
            is_best = False
            if self.d.main:
                net = self.method.export_network(self.model)
                if do_val and self.val_cases:
                    tv = time.perf_counter()
                    v = validate(net, self.val_cases, self.patch, self.n_classes, cfg.val.overlap,
                                 cfg.val.sw_batch_size, self.device)  # fmt: skip
                    rec["val_dice"] = v["dice"]
                    rec["val_time_s"] = round(time.perf_counter() - tv, 3)
                    is_best = v["dice"] > best
                    if is_best:
                        best, best_epoch = v["dice"], epoch + 1
                rec["time_s"] = round(train_time, 3)
                rec["epoch_time_s"] = round(time.perf_counter() - t_ep, 3)
                rec["best_dice"] = best
                history.append(rec)
                with open(jsonl, "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                val_info = {"dice": best, "epoch": best_epoch,
                            "val_centers": list(cfg.data.val_centers or cfg.data.train_centers),
                            "val_sequences": list(cfg.data.val_sequences or cfg.data.train_sequences),
                            "n_val": len(self.val_cases)}  # fmt: skip
                desc = self.description(val_info)
                if is_best:
                    atomic_torch_save(checkpoint_dict(desc, net), best_p)
                raw = self.model.module if hasattr(self.model, "module") else self.model
                train_state = {
                    "model": {k: t.detach().cpu().clone() for k, t in raw.state_dict().items()},
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "method": self.method.state_dict(),
                    "epoch": epoch + 1,
                    "best_dice": best,
                    "best_epoch": best_epoch,
                    "rng": _rng_state(),
                }
                atomic_torch_save(checkpoint_dict(desc, net, train_state), last_p)
                epoch_times.append(time.perf_counter() - t_ep)
                eta = np.mean(epoch_times) * (end_epoch - epoch - 1)
                vtxt = f" val Dice {rec['val_dice']:.4f}" if "val_dice" in rec else ""
                self.log(
                    f"epoch {epoch + 1}/{E} step {(epoch + 1) * S} loss {ep_loss:.4f}{vtxt} "
                    f"(best {best:.4f} @ {best_epoch}) lr {rec['lr']:.2e} "
                    f"{rec['epoch_time_s']:.1f} s/epoch ETA {_fmt_time(eta)}"
                    + (" *" if is_best else "")
                )
                if self.on_epoch is not None:
                    self.on_epoch(dict(rec))
            self.d.barrier()
        if cfg.dump_rank_weights:
            raw = self.model.module if hasattr(self.model, "module") else self.model
            torch.save({"state_dict": {k: t.detach().cpu() for k, t in raw.state_dict().items()},
                        "local_losses": self._local_losses, "rank": self.d.rank, "world": self.d.world},
                       self.run_dir / f"rank{self.d.rank}_weights.pt")  # fmt: skip
        self.d.barrier()
        self.log(f"finished {done}/{E} epochs in {_fmt_time(time.perf_counter() - t_run)}; best val Dice "
                 f"{best:.4f} at epoch {best_epoch}; best checkpoint {best_p}")  # fmt: skip
        result = TrainResult(self.run_dir, best_p if best_p.exists() else None, last_p, best, best_epoch,
                             done, history, self.method.export_network(self.model), cancelled)  # fmt: skip
        if self.d.initialised_here:
            dist.destroy_process_group()
        return result


def train(
    cfg: TrainConfig,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train (or resume) a model as configured; see the module doc for the run folder.

    ``cancel`` is polled between steps (the unfinished epoch is dropped; resume repeats it);
    ``on_epoch`` receives each epoch's metrics record.
    """
    return Trainer(cfg, command=command, log=log, cancel=cancel, on_epoch=on_epoch).run()


def run_train_cli(config_path: str | os.PathLike | None, overrides: list[str] | None = None) -> Path:
    """``pandg train CONFIG [key=value ...]``: returns the best checkpoint path (or last.pt)."""
    from napari_pandg.train.config import load_config

    cfg = load_config(config_path, overrides)
    try:
        preflight(cfg)
    except ValueError as exc:  # ConfigError, or the manifest's PandgIOError: name the config too
        raise type(exc)(f"training config {config_path}: {exc}") from None
    res = train(cfg)
    return res.best_path or res.last_path


def preflight(cfg: TrainConfig) -> None:
    """What can be checked without computing, before the run folder is created or written:
    the method and augmentation names, the manifest (columns, paths, files), the
    initialisation checkpoint and a writable run folder."""
    from napari_pandg.io.safety import check_output_folder
    from napari_pandg.train.methods import AUGMENT_PRESETS, METHODS

    if cfg.method.name not in METHODS:
        raise ConfigError(f"unknown method.name {cfg.method.name!r}; choose from {', '.join(METHODS)}")
    if cfg.method.augment not in AUGMENT_PRESETS:
        raise ConfigError(f"unknown method.augment {cfg.method.augment!r}; choose from {', '.join(AUGMENT_PRESETS)}")
    if getattr(cfg.data, "source", "manifest") == "manifest":
        read_manifest(cfg.data.manifest)
    if cfg.init_checkpoint and not Path(cfg.init_checkpoint).expanduser().is_file():
        raise ConfigError(f"init_checkpoint {cfg.init_checkpoint} does not exist")
    check_output_folder(cfg.run_dir(), "run folder")
