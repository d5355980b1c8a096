"""What a training run is built from, checked before anything is written: the data and its loaders (with the
batch mixing and the gradient accumulation's groups), the model with its optimizer, schedule, gradient scaler
and weight EMA, and the distillation teacher. A model that does not
take the data, a teacher trained on other images or classes, an empty split: each fails here, and the rerun
needs no --overwrite."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from . import distributed, rundir
from .accumulation import Accumulation
from .config import Config
from .csg import kept_plain_summary
from .data import (DeviceLoader, build_mixing, build_splits, check_classes, check_split_images, eval_loader,
                   sample_fingerprint, train_loader, usable_workers)
from .device import autocast
from .distill import Teacher, load_teacher
from .errors import UserError, one_line
from .models.build import build_model, load_generator, load_pretrained
from .optim import build_optimizer, build_scheduler
from .params import report_for_config
from .weight_ema import build_ema


class RunSetup:
    """Everything a run trains with, built in the order that fixes the random state (data, model, teacher,
    then a look at the data through both); ``resume`` loads no pretrained weights: the checkpoint has them."""

    def __init__(self, cfg: Config, run_dir: Path, resume: bool, env: distributed.DistEnv, device: torch.device,
                 allow_imports: tuple[str, ...] = ()):
        self.cfg, self.run_dir, self.resume, self.env, self.device = cfg, run_dir, resume, env, device
        self.notes: list[str] = []  # what the run's first lines say of the model: where its weights come from
        self._build_data()
        self._build_model()
        self._build_teacher(allow_imports)
        self._check_model_takes_data()
        self.notes += _recipe_notes(cfg, self.accumulation, env.world_size)

    def _build_data(self) -> None:
        """Every process takes its own share of each epoch and of the validation set."""
        cfg, env = self.cfg, self.env
        self.splits = splits = build_splits(cfg.data, cfg.model.num_classes)
        if splits.train is None:
            raise UserError(f"{cfg.data.name}: no training folder at {Path(cfg.data.root) / 'train'}; give the "
                            "data's folder with --set data.root=DIR")
        if cfg.data.train_subset is not None and cfg.data.train_subset > len(splits.train):  # config.yaml would say
            raise UserError(f"data.train_subset: {cfg.data.train_subset:,} is more than the {len(splits.train):,} "
                            "training images there are; leave it out (null) to train on all of them")
        if len(splits.val) == 0:
            raise UserError(f"{cfg.data.name}: the validation split is empty")
        check_split_images(splits, cfg.data)  # a bad file found now, not after a training epoch
        began_with = rundir.loader_began_with(self.run_dir, self.device) if self.resume else None
        self.loader = train_loader(splits.train, cfg.data, cfg.train.seed, self.device, env.rank, env.world_size,
                                   began_with)
        self.val_loader = eval_loader(splits.val, cfg.data, self.device, env.rank, env.world_size, began_with)
        self.sampler = self.loader.batch_sampler
        self.steps_per_epoch: int = self.sampler.batches_per_epoch()  # batches: what the state's steps count
        self.accumulation = Accumulation(cfg.train.accumulate_steps, self.steps_per_epoch)
        self.mixing = build_mixing(cfg.data, cfg.model.num_classes, cfg.train.seed, env.rank)

    def _build_model(self) -> None:
        cfg, env, device = self.cfg, self.env, self.device
        model = build_model(cfg, pretrained=False)
        if cfg.model.pretrained and not self.resume:  # a resume takes every weight from its checkpoint
            self.notes.append(load_pretrained(model, cfg.model.pretrained, cfg.model.pretrained_exclude))
        if cfg.model.csg and cfg.model.csg.init_from and not self.resume:
            self.notes.append(load_generator(model, cfg.model.csg.init_from))
        kept = kept_plain_summary(model) if cfg.model.csg else ""
        if kept:
            self.notes.append(f"kept plain: {kept}")
        if cfg.train.sync_bn and env.enabled:
            if device.type != "cuda":
                raise UserError("train.sync_bn: SyncBatchNorm needs CUDA devices; set it false for CPU processes")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        self.model: nn.Module = model.to(device).to(memory_format=self.memory_format)  # plain: no DDP, no compile
        self.lr_factor = env.world_size if cfg.optim.lr_scaling == "linear" else 1
        self.optimizer = build_optimizer(model, cfg.optim, self.lr_factor)
        self.scheduler = self.schedule()
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.amp == "fp16")
        self.report = report_for_config(cfg.model, model)
        self.ema = build_ema(self.model, cfg.train.ema)  # from the weights the run starts with (a resume loads its own)

    def schedule(self) -> torch.optim.lr_scheduler.LRScheduler:
        """A fresh schedule over the optimizer's current rates, at step 0; it counts optimizer steps (one per
        group of ``train.accumulate_steps`` batches)."""
        cfg = self.cfg
        return build_scheduler(self.optimizer, cfg.schedule, cfg.train.epochs, self.accumulation.steps_per_epoch)

    def _build_teacher(self, allow_imports: tuple[str, ...]) -> None:
        """The distillation teacher (or None): frozen, in eval mode, on the student's device and memory format."""
        self.teacher: Teacher | None = None
        if self.cfg.distill is None:
            return
        teacher = load_teacher(self.cfg, self.run_dir, allow_imports)
        check_classes(teacher.classes, self.splits.classes, f"distill.teacher {teacher.source}", "the training data")
        model = teacher.model.to(self.device).to(memory_format=self.memory_format)
        self.teacher = dataclasses.replace(teacher, model=model)
        d = self.cfg.distill
        self.notes.append(f"distilling from {teacher.source} (alpha {d.alpha:g}, temperature {d.temperature:g}; "
                          f"weights sha256 {teacher.sha256[:12]})")

    @property
    def teacher_record(self) -> dict[str, str] | None:
        """What a checkpoint records of the teacher: a resume must find the same weights."""
        return None if self.teacher is None else {"source": self.teacher.source, "sha256": self.teacher.sha256}

    @torch.no_grad()
    def _check_model_takes_data(self) -> None:
        """Two training and two validation images through the model (eval mode: nothing learns, no statistic
        moves) before anything is written: a model that does not take the data (channels, a fixed-size head,
        images too small for its pooling) fails here, and the rerun needs no --overwrite."""
        first_batch = next(iter(self.sampler.plan()))[:2].tolist()
        for split, ds, keys in (("training", self.splits.train, [tuple(k) for k in first_batch]),
                                ("validation", self.splits.val, range(min(2, len(self.splits.val))))):
            x = torch.stack([ds[k][0] for k in keys])
            self.input_shape = list(x.shape[1:])  # ends as the validation images': what inference and export see
            try:
                with autocast(self.device, self.cfg.train.amp):
                    self.model.eval()(x.to(self.device, memory_format=self.memory_format))
            except (RuntimeError, ValueError, TypeError, IndexError) as e:
                raise UserError(f"{self.cfg.model.arch} does not take the {split} images (a batch of "
                                f"{'x'.join(map(str, x.shape[1:]))}): {one_line(e, 300)}") from None
        if self.teacher is not None:
            self._check_teacher_takes_data(x)

    @torch.no_grad()
    def _check_teacher_takes_data(self, x: torch.Tensor) -> None:
        """The teacher was trained on images like these and has the student's outputs."""
        shape, source, trained_on = list(x.shape[1:]), self.teacher.source, self.teacher.input_shape
        if trained_on is not None and list(trained_on) != shape:
            raise UserError(f"distill.teacher {source} was trained on {'x'.join(map(str, trained_on))} "
                            f"images; this data gives {'x'.join(map(str, shape))}: its outputs would not mean the same")
        try:
            with autocast(self.device, self.cfg.train.amp):
                out = self.teacher.model(x.to(self.device, memory_format=self.memory_format))
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            raise UserError(f"distill.teacher {source} does not take these images (a batch of "
                            f"{'x'.join(map(str, shape))}): {one_line(e, 300)}") from None
        if out.dim() != 2 or out.shape[1] != self.cfg.model.num_classes:
            raise UserError(f"distill.teacher {source} gives {tuple(out.shape[1:])} outputs per image; the model has "
                            f"{self.cfg.model.num_classes} classes: a teacher must have the student's classes")

    def train_files(self) -> str | None:
        """Which training images, with which labels (a digest): a resume needs the same."""
        return sample_fingerprint(self.splits.train)

    def for_training(self) -> tuple[nn.Module, nn.Module | None]:
        """The model the steps run and the teacher they ask, wrapped as the config asks: DDP across processes
        (gradients live in the all-reduce buckets, no copy per step), ``torch.compile``. ``model`` itself
        stays plain: checkpoints carry no wrapper prefixes."""
        cfg, device = self.cfg, self.device
        model: nn.Module = self.model
        teacher = None if self.teacher is None else self.teacher.model
        if self.env.enabled:
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None, gradient_as_bucket_view=True)
        if cfg.train.compile:
            model = torch.compile(model, mode=cfg.train.compile_mode)
            if teacher is not None:
                teacher = torch.compile(teacher, mode=cfg.train.compile_mode)
        return model, teacher

    @property
    def feed(self) -> str:
        """Which loader feeds the training steps (the banner, run.json and acl report say it)."""
        if isinstance(self.loader, DeviceLoader):
            return "device loader"
        workers, asked = usable_workers(self.cfg.data), self.cfg.data.workers
        return f"DataLoader, {workers} workers" + (f" (data.workers {asked} capped to the cores)" if workers < asked
                                                    else "")


def _recipe_notes(cfg: Config, accumulation: Accumulation, processes: int) -> list[str]:
    """What the banner says of the recipe parts the run sets (issue 34): how each changes what the logs show."""
    d, t, notes = cfg.data, cfg.train, []
    if d.mixup or d.cutmix:
        parts = [f"{name} {alpha:g}" for name, alpha in (("mixup", d.mixup), ("cutmix", d.cutmix)) if alpha]
        notes.append(f"batch mixing ({', '.join(parts)}): the loss is on soft targets; train top-1 counts each mixed "
                     "image's dominant label")
    if t.accumulate_steps > 1:
        group = min(t.accumulate_steps, accumulation.batches_per_epoch)  # an epoch's end cuts a longer group
        cut = f" (an epoch has only {group} batches)" if group < t.accumulate_steps else ""
        notes.append(f"gradient accumulation: one optimizer step per {t.accumulate_steps} batches{cut} (global batch "
                     f"{group * d.batch_size * processes}), {accumulation.steps_per_epoch} per epoch: "
                     "the schedule counts them")
    if t.ema is not None:
        e = t.ema
        notes.append(f"weight EMA (decay {e.decay:g}, every {e.every_steps} optimizer step(s), warm-up "
                     f"{e.warmup_steps}): evaluated beside the weights each epoch; best.pt holds the EMA's weights, "
                     "chosen on its val top-1")
    return notes
