"""``pix2video train-toy``: renders the world, trains every toy component, saves the set.

On CUDA the components train side by side, one process each (the VAE and
then the UNet in one process, since the UNet learns in the VAE's latent
space; depth, captioner and CLIP in three more), sharing the GPU. On the CPU
they train one after another. The result is a model folder in SD2-depth's
layout (see :mod:`pix2video.models.toy`) plus ``losses.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .data import Dataset, render_dataset
from .trainers import Budget

COMPONENT_SEEDS = {"vae": 1, "unet": 2, "depth_estimator": 3, "captioner": 4, "clip": 5}


def component_seed(seed: int, component: str) -> int:
    """The seed one component trains from: the run's seed and the component's own."""
    return seed * 100 + COMPONENT_SEEDS[component]


@dataclass(frozen=True)
class Plan:
    """How much of everything: data and, per component, steps, batch and learning rate."""

    scenes: int = 4000
    frames_per_scene: int = 2
    vae: Budget = field(default_factory=lambda: Budget(steps=8000, batch=32, lr=4e-4, max_seconds=100))
    unet: Budget = field(default_factory=lambda: Budget(steps=12000, batch=128, lr=3e-4, max_seconds=270))
    depth_estimator: Budget = field(default_factory=lambda: Budget(steps=5000, batch=64, lr=3e-4, max_seconds=300))
    captioner: Budget = field(default_factory=lambda: Budget(steps=5000, batch=64, lr=3e-4, max_seconds=300))
    clip: Budget = field(default_factory=lambda: Budget(steps=5000, batch=256, lr=5e-4, max_seconds=300))
    unet_uncond_prob: float = 0.2  # captions dropped to "" (classifier-free guidance)
    unet_noise_discount: float = 0.7  # multi-resolution training noise (trainers.pyramid_noise); 0: white noise


SMOKE = Plan(
    scenes=6,
    frames_per_scene=2,
    vae=Budget(steps=2, batch=2, lr=1e-4),
    unet=Budget(steps=2, batch=2, lr=1e-4),
    depth_estimator=Budget(steps=2, batch=2, lr=1e-4),
    captioner=Budget(steps=2, batch=2, lr=1e-4),
    clip=Budget(steps=2, batch=2, lr=1e-4),
)


def plan_from_losses(path: str | Path) -> Plan:
    """The plan that reproduces a finished run: its data, and per component the
    batch, learning rate and the step count it reached (no time cap), read
    from that run's ``losses.json``."""
    summary = json.loads(Path(path).read_text())
    p = summary["plan"]
    budgets = {}
    for name in ("vae", "unet", "depth_estimator", "captioner", "clip"):
        b = p[name]
        budgets[name] = Budget(steps=summary["components"][name]["steps"], batch=b["batch"], lr=b["lr"])
    unet = summary["components"]["unet"]
    return Plan(
        scenes=p["scenes"],
        frames_per_scene=p["frames_per_scene"],
        # Runs from before these settings existed used 10% dropout and white noise.
        unet_uncond_prob=unet.get("uncond_prob", 0.1),
        unet_noise_discount=unet.get("noise_discount", 0.0),
        **budgets,
    )


def allow_tf32() -> None:
    """TF32 matmuls and convolutions on CUDA (the toy training's precision)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def train_unet_and_text_encoder(
    out: Path,
    modules: dict,
    tokenizer,
    vae,
    data: Dataset,
    budget: Budget,
    device: torch.device,
    seed: int,
    progress: bool,
    *,
    uncond_prob: float,
    noise_discount: float,
) -> dict:
    """Trains the UNet and text encoder of ``modules`` on the latents ``vae``
    gives (the shipped float16 one on CUDA), saves them into ``out`` and
    returns their history with the settings that made it."""
    from diffusers import DDIMScheduler

    from ..models.toy import save_component
    from . import trainers

    latents = trainers.encode_dataset(vae, data, device)
    depth = trainers.depth_condition(data, tuple(latents.shape[-2:]), device)
    del vae  # frees the VAE before the UNet trains where the caller keeps no reference to it (retrain)
    sched = dict(DDIMScheduler.from_pretrained(out, subfolder="scheduler").config)
    h = trainers.train_unet(
        modules["unet"],
        modules["text_encoder"],
        tokenizer,
        latents,
        depth,
        data.captions,
        sched,
        budget,
        device,
        component_seed(seed, "unet"),
        progress,
        uncond_prob=uncond_prob,
        noise_discount=noise_discount,
    )
    save_component(out, "unet", modules["unet"])
    save_component(out, "text_encoder", modules["text_encoder"])
    return h.as_dict() | {"uncond_prob": uncond_prob, "noise_discount": noise_discount}


def _job(
    name: str, folder: str, data_dir: str, plan: Plan, seed: int, device: str, progress: bool, parallel: bool = False
) -> dict:
    """Trains one job's components and saves them into ``folder``; returns their histories."""
    from transformers import BlipProcessor, CLIPImageProcessor, CLIPTokenizer, DPTImageProcessor

    from ..models.toy import save_component, toy_modules
    from . import trainers

    allow_tf32()
    out, dev = Path(folder), torch.device(device)
    data = Dataset.load(Path(data_dir))
    if dev.type == "cuda" or parallel:
        data = trainers.on_device(data, dev)
    tok = CLIPTokenizer.from_pretrained(out / "tokenizer")
    modules = toy_modules(len(tok), seed)
    s = lambda c: component_seed(seed, c)  # noqa: E731
    histories = {}
    if name == "vae_unet":
        vae = modules["vae"]
        histories["vae"] = trainers.train_vae(vae, data, plan.vae, dev, s("vae"), progress).as_dict()
        save_component(out, "vae", vae)
        # The UNet learns on the latents the shipped (float16) VAE gives.
        vae = vae.to(torch.float16 if dev.type == "cuda" else torch.float32)
        histories["unet"] = train_unet_and_text_encoder(
            out,
            modules,
            tok,
            vae,
            data,
            plan.unet,
            dev,
            seed,
            progress,
            uncond_prob=plan.unet_uncond_prob,
            noise_discount=plan.unet_noise_discount,
        )
    elif name == "depth_estimator":
        fe = DPTImageProcessor.from_pretrained(out / "feature_extractor")
        model = modules["depth_estimator"]
        h = trainers.train_depth(model, data, fe.image_mean, fe.image_std, plan.depth_estimator, dev, s(name), progress)
        histories[name] = h.as_dict()
        save_component(out, name, model)
    elif name == "captioner":
        proc = BlipProcessor.from_pretrained(out / "captioner")
        model = modules["captioner"]
        histories[name] = trainers.train_captioner(model, proc, data, plan.captioner, dev, s(name), progress).as_dict()
        save_component(out, name, model)
    elif name == "clip":
        ctok = CLIPTokenizer.from_pretrained(out / "clip")
        ip = CLIPImageProcessor.from_pretrained(out / "clip")
        model = modules["clip"]
        histories[name] = trainers.train_clip(model, ctok, ip, data, plan.clip, dev, s(name), progress).as_dict()
        save_component(out, name, model)
    else:
        raise ValueError(f"unknown job {name!r}")
    return histories


def _job_entry(name, folder, data_dir, plan, seed, device, progress, result_file):
    try:
        result = {"ok": True, "histories": _job(name, folder, data_dir, plan, seed, device, progress, True)}
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the run
        import traceback

        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    Path(result_file).write_text(json.dumps(result))


JOBS = ("vae_unet", "depth_estimator", "captioner", "clip")


def train_toy(
    output: str | Path,
    *,
    seed: int = 0,
    plan: Plan | None = None,
    device: str = "cpu",
    workers: int | None = None,
    progress: bool = True,
    parallel: bool | None = None,
) -> dict:
    """Trains the toy model set into ``output`` (created; must not hold a model
    already) and returns the summary written to ``output/losses.json``.
    ``parallel`` (default: on CUDA) trains the jobs in processes of their own."""
    from tqdm import tqdm

    from ..models.toy import write_static_parts

    plan = plan or Plan()
    out = Path(output)
    if (out / "model_index.json").exists():
        raise FileExistsError(f"output: {str(out)!r} already holds a model set")
    t0 = time.monotonic()
    write_static_parts(out)
    workers = workers or max(1, (os.cpu_count() or 1) - 1)
    scratch = Path(tempfile.mkdtemp(prefix="toy-data-"))
    try:
        bar = tqdm(total=plan.scenes, desc="   render world", unit="scene", disable=not progress, mininterval=5)
        data = render_dataset(seed, plan.scenes, plan.frames_per_scene, workers=workers, progress=bar.update)
        bar.close()
        data.save(scratch)
        render_s = time.monotonic() - t0
        dev = torch.device(device)
        histories: dict = {}
        if parallel if parallel is not None else dev.type == "cuda":
            ctx = torch.multiprocessing.get_context("spawn")
            procs = []
            for name in JOBS:
                rf = scratch / f"{name}.json"
                p = ctx.Process(
                    target=_job_entry, args=(name, str(out), str(scratch), plan, seed, device, progress, str(rf))
                )
                p.start()
                procs.append((name, p, rf))
            errors = []
            for name, p, rf in procs:
                p.join()
                r = json.loads(rf.read_text()) if rf.exists() else {"ok": False, "error": f"exit code {p.exitcode}"}
                if r["ok"]:
                    histories.update(r["histories"])
                else:
                    errors.append(f"{name}: {r['error']}\n{r.get('traceback', '')}")
            if errors:
                raise RuntimeError("training failed:\n" + "\n".join(errors))
        else:
            for name in JOBS:
                histories.update(_job(name, str(out), str(scratch), plan, seed, device, progress))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    summary = {
        "seed": seed,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(torch.device(device)) if torch.device(device).type == "cuda" else None,
        "torch": torch.__version__,
        "plan": dataclasses.asdict(plan),
        "training_frames": len(data),
        "render_seconds": round(render_s, 1),
        "minutes": round((time.monotonic() - t0) / 60, 2),
        "components": histories,
    }
    (out / "losses.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
