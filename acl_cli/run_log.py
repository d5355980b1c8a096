"""What a training run reports, and where: console lines, the progress bar, TensorBoard and ``metrics.csv``.

Only rank 0 reports: the others get a quiet ``log`` and a stand-in for the TensorBoard writer. TensorBoard
opens when the run takes its folder (:meth:`RunLog.open_tensorboard`); until then nothing is written.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from tqdm import tqdm

from .config import Config
from .files import write_text
from .params import ParamReport, format_report, outweighs
from .records import HPARAM_METRICS, metrics_csv, write_hparams
from .run_setup import RunSetup


class NullWriter:
    """Stands in for the SummaryWriter before the run folder is taken, and on processes other than rank 0."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


class RunLog:
    """The run's reports; ``line`` is the console (quiet on processes other than rank 0)."""

    def __init__(self, cfg: Config, run_dir: Path, line: Callable[..., None], main: bool):
        self.cfg, self.run_dir, self.line, self.main = cfg, run_dir, line, main
        self.writer: Any = NullWriter()

    def banner(self, setup: RunSetup) -> None:
        """The run's first lines: warnings about the data, where the weights come from, then what trains how."""
        for note in setup.splits.notes:
            self.line(f"warning: {note}")
        for note in setup.notes:
            self.line(note)
        cfg, report, env, splits = self.cfg, setup.report, setup.env, setup.splits
        ratio = report.compression
        smaller = "" if not cfg.model.csg else f" ({ratio:.2f}x fewer than the original)" if ratio >= 1 else \
            f" ({1 / ratio:.2f}x more than the original: {outweighs(report)})"
        procs = f" x {env.world_size} processes (lr x {setup.lr_factor})" if env.enabled else ""
        self.line(f"{cfg.model.arch}{' CSG' if cfg.model.csg else ''}: {report.total:,} params{smaller}, "
                  f"{len(splits.train):,} train / {len(splits.val):,} val images (val: {splits.sources['val']}), "
                  f"{setup.steps_per_epoch} steps per epoch on {setup.device}{procs} ({setup.feed}); "
                  f"logs in {self.run_dir}")

    def open_tensorboard(self, report: ParamReport, step: int, resume: bool, settings_changed: bool) -> None:
        """Start the TensorBoard logs (rank 0, once the run folder is taken). A resume drops what was logged
        after its checkpoint, never the points of the step it resumes at."""
        from torch.utils.tensorboard import SummaryWriter

        cfg, tb = self.cfg, self.run_dir / "tb"
        self.writer = SummaryWriter(str(tb), purge_step=step + 1 if resume else None)
        write_hparams(tb, cfg)  # the settings as they are now (a resume may change lr, epochs)
        if not resume:
            self.writer.add_text("params", format_report(report, "markdown"))
            self.writer.add_scalar("hparam/params", report.total, 0)
        if not resume or settings_changed:
            self.writer.add_text("config", "```yaml\n" + cfg.to_yaml() + "```", step)

    def progress_bar(self, loader: Iterable, epoch: int, initial: int, total: int) -> tqdm:
        """The epoch's bar: on a terminal only (a SLURM log or ``| tee`` gets plain lines at the log points)."""
        cfg = self.cfg
        return tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False, dynamic_ncols=True,
                    disable=not (cfg.train.progress and self.main and sys.stderr.isatty()), initial=initial,
                    total=total)

    def running(self, bar: tqdm, sums: list[float], terms: dict[str, float], step: int, where: str,
                lr: float, img_s: float) -> None:
        """A log point: the epoch's loss so far (and its objective's terms) in TensorBoard, and on the bar
        or, without one, a line; ``where`` is ``epoch E/N step S/M``."""
        loss_sum, correct, images = sums[:3]
        seen = max(images, 1)
        self.writer.add_scalar("train/loss_running", loss_sum / seen, step)
        self.loss_terms(terms, step)
        self.writer.add_scalar("lr", lr, step)
        if bar.disable and self.cfg.train.progress:  # not a terminal (a SLURM log, | tee): a plain line, no \r
            self.line(f"  {where}  loss {loss_sum / seen:.4f}  top1 {100 * correct / seen:.2f}%  "
                      f"lr {lr:.4g}  {img_s:,.0f} img/s")
        else:
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}%", img_s=f"{img_s:.0f}",
                            refresh=False)

    def loss_terms(self, terms: dict[str, float], step: int, suffix: str = "_running") -> None:
        """The objective's terms apart (distillation: labels, teacher), as means over the epoch's images."""
        for name, mean in terms.items():
            self.writer.add_scalar(f"train/loss_{name}{suffix}", mean, step)

    def epoch_scalars(self, row: dict[str, Any]) -> None:
        """The epoch's row in TensorBoard, at its last step; a weight EMA's evaluation under ``ema_val/``."""
        for key in ("train_loss", "train_top1", "train_top5", "val_loss", "val_top1", "val_top5", "ema_val_loss",
                    "ema_val_top1", "ema_val_top5"):
            if row.get(key) is not None:
                split, name = key.rsplit("_", 1)
                self.writer.add_scalar(f"{split}/{name}", row[key], row["step"])
        self.writer.add_scalar("lr", row["lr"], row["step"])  # also at epoch ends: short runs have it too
        self.writer.add_scalar("perf/img_s", row["img_s"], row["step"])
        self.writer.add_scalar("perf/epoch_time_s", row["epoch_time"], row["step"])
        self.writer.add_scalar("perf/eval_time_s", row["eval_time"], row["step"])
        self.writer.flush()

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        """``metrics.csv``, rewritten whole from the history (rank 0)."""
        if self.main:
            write_text(self.run_dir / "metrics.csv", metrics_csv(history))

    def epoch_done(self, history: list[dict[str, Any]], is_best: bool) -> None:
        """The epoch recorded (the last row of ``history``): ``metrics.csv`` rewritten, then its line."""
        self.write_metrics(history)
        row = history[-1]
        top5 = "" if row["val_top5"] is None else f"top5 {row['val_top5']:5.2f}%  "
        ema = "" if row.get("ema_val_top1") is None else f"ema top1 {row['ema_val_top1']:5.2f}%  "
        mixed = " (dominant label)" if self.cfg.data.mixup or self.cfg.data.cutmix else ""  # of mixed images
        self.line(f"epoch {row['epoch']:>3}/{self.cfg.train.epochs}  train loss {row['train_loss']:.4f} "
                  f"top1{mixed} {row['train_top1']:5.2f}%  val loss {row['val_loss']:.4f} top1 {row['val_top1']:5.2f}% "
                  f"{top5}{ema}lr {row['lr']:.4g}  {row['img_s']:,.0f} img/s  "
                  f"{row['epoch_time']:.1f}s{'  *best' if is_best else ''}")

    def final(self, final: dict[str, Any], step: int) -> None:
        """``final.json`` (it marks the run as finished), the HParams metrics, and the closing line."""
        if self.main:
            write_text(self.run_dir / "final.json", json.dumps(final, indent=2))
            for key in HPARAM_METRICS:
                if final[key] is not None:  # val_top5 with fewer than 5 classes
                    self.writer.add_scalar(f"hparam/{key}", final[key], step)
            self.writer.flush()
        self.line(f"done: best val top1 {final['best_val_top1']:.2f}%; checkpoints {self.run_dir / 'best.pt'} and "
                  f"last.pt; TensorBoard: tensorboard --logdir {self.run_dir / 'tb'}")

    def close(self) -> None:
        self.writer.close()
