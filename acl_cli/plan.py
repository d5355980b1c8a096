"""What a sweep does with one job's run folder: train it, resume it, skip it (it finished as the job asks), or
leave it alone (it holds a run made with other settings). Decided here alone, so that a dry run prints what
the real run does and the scripts only run what they are told.

Configs and checkpoints are read as data (``weights_only``): nothing a run folder names is imported, and
nothing is written. A distillation teacher is compared by what it is, the SHA-256 of its weights that the
run recorded, not by where it was: a clone at another path holds the same teacher under another name. A
frozen generator a run started from (``model.csg.init_from``) is compared the same way, by its weights, which
the run's checkpoints hold unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import NOT_COMPUTATIONAL, Config, absolute_paths, build_config, load_config
from .errors import UserError, one_line


@dataclass(frozen=True)
class Plan:
    action: str  # train, resume, skip or conflict
    why: str = ""  # a conflict's reason: what differs

    def __str__(self) -> str:
        return {"skip": "skip (finished)", "conflict": f"conflict: {self.why}"}.get(self.action, self.action)


def resolved(cfg: Config) -> Config:
    """A config as ``acl train`` would record it: paths absolute, ``num_classes`` filled in from the arch
    (never by importing a factory module a run folder names)."""
    from .models import resolve_model_config
    from .models.external import factory_module

    if factory_module(cfg.model.arch) is None:
        resolve_model_config(cfg.model)
    return absolute_paths(cfg)


def differences(run: str | Path, config_path: str | None, overrides: tuple[str, ...] = (),
                ignoring: tuple[str, ...] = NOT_COMPUTATIONAL) -> list[str]:
    """``acl config diff``: one ``key: RUN's -> the config's`` line per setting that differs where RUN (a run
    folder or a config file) and ``config_path`` with ``overrides`` differ, but those under ``ignoring``. With
    nothing ignored (``--all``), a teacher that only moved is listed too, as the data root is."""
    run = Path(run)
    ran = load_config(run / "config.yaml" if run.is_dir() else run)
    return _lines(run, resolved(ran), resolved(load_config(config_path, overrides)), ignoring, bool(ignoring))


def _lines(run: Path, ran: Config, wanted: Config, ignoring: tuple[str, ...], moved_ok: bool = True) -> list[str]:
    """The lines of the settings that differ; ``moved_ok``: a teacher with the run's recorded weights is the same."""
    from .rundir import changed_settings, shown

    lines = []
    for key, (before, after) in changed_settings(ran, wanted, ignoring).items():
        note = ""
        if key == "distill.teacher" and run.is_dir() and isinstance(before, str) and isinstance(after, str):
            why = teacher_mismatch(run, after)
            if why is None and moved_ok:
                continue  # the run's own teacher, found at another path
            note = f" ({why or 'moved: the same weights'})"
        elif key == "model.csg.init_from" and run.is_dir() and isinstance(before, str) and isinstance(after, str):
            why = generator_mismatch(run, after, ran)
            if why is None and moved_ok:
                continue  # the run's own frozen generator, found at another path
            note = f" ({why or 'moved: the same weights'})"
        lines.append(f"{key}: {shown(before, 300)} -> {shown(after, 300)}{note}")  # paths whole: they differ at the end
    return lines


def recorded_teacher(run: Path) -> str | None:
    """The SHA-256 of the teacher's weights that ``run``'s checkpoints record (training writes it), or None."""
    from .checkpoint import load_checkpoint

    for name in ("best.pt", "last.pt"):  # best.pt first: a finished run's is lean
        if (run / name).is_file():
            try:
                teacher = load_checkpoint(run / name).get("progress", {}).get("teacher")
            except UserError:
                continue
            if isinstance(teacher, dict) and isinstance(teacher.get("sha256"), str):
                return teacher["sha256"]
    return None


def teacher_mismatch(run: Path, teacher: str) -> str | None:
    """None when the teacher at ``teacher`` has the weights ``run`` was distilled from; else why it is not
    known to (weights computed as training computes them; a factory module is refused, never imported)."""
    from .distill import weights_sha256
    from .evaluate import load_model

    recorded = recorded_teacher(run)
    if recorded is None:
        return "weights not checked: the run's checkpoints record no teacher"
    try:
        model, _, _ = load_model(teacher)
    except UserError as e:
        return f"weights not checked: {one_line(e)}"
    digest = weights_sha256(model)
    return None if digest == recorded else f"other weights: sha256 {digest[:12]}, the run's {recorded[:12]}"


def generator_mismatch(run: Path, source: str, ran: Config) -> str | None:
    """None when ``source`` holds the generator that ``run`` kept frozen (its checkpoints hold it unchanged);
    else why that is not known. A generator that trained on is not the one it started from: never the same."""
    import torch

    from .checkpoint import load_checkpoint

    if not (ran.model.csg and ran.model.csg.freeze):
        return "weights not checked: the run trained its generator on"
    try:
        wanted = load_checkpoint(source)["model"].get("csg.weight")
        name = next(n for n in ("best.pt", "last.pt") if (run / n).is_file())
        held = load_checkpoint(run / name)["model"].get("csg.weight")
    except (UserError, StopIteration, KeyError, TypeError, AttributeError) as e:
        return f"weights not checked: {one_line(e) if isinstance(e, UserError) else 'no generator to compare'}"
    same = isinstance(wanted, torch.Tensor) and isinstance(held, torch.Tensor) and wanted.shape == held.shape \
        and torch.equal(wanted.float(), held.float())
    return None if same else "other weights: not the generator the run kept frozen"


def plan(run: str | Path, config_path: str, overrides: tuple[str, ...] = ()) -> Plan:
    """The decision for the job ``config_path`` + ``overrides`` whose run folder is ``run``: skip a run that
    finished as asked, resume one with ``last.pt`` that a resume can bring to the job's settings, train where
    there is neither, and a conflict (naming the setting) for a run made with other settings."""
    run = Path(run)
    if run.exists() and not run.is_dir():
        raise UserError(f"{run} is a file; RUN names a run folder")
    wanted = load_config(config_path, overrides)  # bad input is refused whatever the folder holds
    if (run / "final.json").is_file():
        lines = differences(run, config_path, overrides)
        return Plan("conflict", f"finished with other settings ({'; '.join(lines)})") if lines else Plan("skip")
    if (run / "last.pt").is_file():
        from .checkpoint import load_checkpoint
        from .rundir import RESUMABLE

        stored = build_config(load_checkpoint(run / "last.pt")["config"])  # what --resume continues
        resumable = tuple(k for k in RESUMABLE if k != "distill.teacher")  # a teacher: by its weights
        lines = _lines(run, resolved(stored), resolved(wanted), resumable)
        if lines:
            return Plan("conflict", f"was started with other settings, which a resume cannot change ({lines[0]})")
        return Plan("resume")
    return Plan("train")
