"""Test helper: the learning rate a schedule gives at every step."""
from acl_cli.optim import build_optimizer, build_scheduler


def lr_per_step(model, cfg, epochs: int, steps_per_epoch: int) -> list[float]:
    opt = build_optimizer(model, cfg.optim)
    sched = build_scheduler(opt, cfg.schedule, epochs=epochs, steps_per_epoch=steps_per_epoch)
    lrs = []
    for _ in range(epochs * steps_per_epoch):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs
