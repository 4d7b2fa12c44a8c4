#!/usr/bin/env python3
"""Reference data from Hugging Face diffusers' own schedulers (tests/data/diffusers_schedulers.ref).

The other generators in tools/ re-implement the formulas. This one runs the real Python
scheduler classes of diffusers, so that the C++ schedulers can be compared with what diffusers
actually computes. That includes its float32 tables and its float32 upcasts inside step().

It was run against diffusers commit

    58eb52c0803ea9af3abec60841c2a093bdf1f951

with Debian 12's /usr/bin/python3 (3.11), python3-torch 1.13.1 (torch.__version__ 1.13.0a0),
python3-numpy 1.24.2 and python3-scipy (LMSDiscreteScheduler needs scipy.integrate).

To reproduce, get the diffusers sources at that commit and run one of these:

    # from a git directory (a clone, or `fetch github:huggingface/diffusers`):
    /usr/bin/python3 tools/gen_diffusers_reference.py --git-dir /path/to/diffusers/.git \
        --rev 58eb52c0803ea9af3abec60841c2a093bdf1f951

    # from an extracted tree, for example made with
    #   git --git-dir=DIR archive REV src/diffusers | tar -x -C /tmp/diffusers-src
    /usr/bin/python3 tools/gen_diffusers_reference.py --src /tmp/diffusers-src \
        --commit 58eb52c0803ea9af3abec60841c2a093bdf1f951

The default output is tests/data/diffusers_schedulers.ref, next to this script's repository
root; -o changes it. The run takes a few seconds, and the output is deterministic (same
sources and same torch give the same bytes).

Nothing from diffusers is copied into this repository. The script loads only the
scheduling_*.py modules it needs, straight from the given source tree. The package's
__init__.py files are never executed, because they import huggingface_hub, safetensors,
and so on. Instead, the modules that the schedulers import with relative imports are
replaced by small stand-ins that this script builds in memory (see install_stubs):

  diffusers.configuration_utils  ConfigMixin, register_to_config (the config is the
                                 __init__ arguments plus the signature's defaults, as in
                                 diffusers; attribute and item access, hasattr only for keys
                                 that are present)
  diffusers.utils                BaseOutput, deprecate (only records its messages),
                                 is_scipy_available, logging
  diffusers.utils.torch_utils    randn_tensor: returns the deterministic noise described
                                 below, not random numbers
  diffusers.schedulers.scheduling_utils
                                 SchedulerMixin (no hub code), KarrasDiffusionSchedulers (an
                                 Enum of names), SchedulerOutput

  torchsde                       a module whose BrownianInterval refuses to be built (not in
                                 Debian; scheduling_dpmsolver_sde imports it)

and scheduling_dpmsolver_sde's BrownianTreeNoiseSampler is replaced by RecordedNoiseSampler,
whose calls return the deterministic randn_tensor stream below (recorded as noise_<k>) in place of
torchsde's Brownian-tree increments; the C++ replay feeds the same values (for the second call of
a DPM++ SDE step, the fresh normals that its correlated combination turns into them).

None of them does any arithmetic on the values the schedulers compute.

Run conditions (these follow the request that the data was made for):

  * torch.set_default_dtype(torch.float64). diffusers still builds its betas and
    alphas_cumprod explicitly in float32, and several step() functions upcast or downcast
    explicitly with .to(torch.float32). That is recorded as it is. Tensors that diffusers
    creates without a dtype (for example the appended terminal sigma, torch.zeros(1), or
    DDPM's self.one) are float64 here. The dtypes of timesteps and sigmas are recorded in
    '#dtype' lines.
    One case is the exception: unipc_bh2_20 runs with torch's usual default, float32,
    because UniPC's corrector mixes a default-dtype torch.ones(()) into a float32 system
    and torch.linalg.solve refuses the float64/float32 mix. Its sample and model output are
    float64 all the same. The "default_dtype" field of each '#run' line says which applies.
  * x_T = init_noise_sigma * [0.5, -1.2, 0.3, 2.0] in float64, with shape (1, 4, 1, 1)
    (batch, channels, height, width), because some step() functions look at dim 1.
    init_noise_sigma is read after set_timesteps(). FlowMatchEulerDiscreteScheduler has no
    init_noise_sigma, so 1.0 is used there. It has no scale_model_input() either, so the
    model gets the sample itself, as in the SD3 and Flux pipelines.
  * The loop is the one the pipelines use. For every t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(sample, t)
        eps  = 0.3*sin(x_in) + 0.05*cos(0.01*float(t))*x_in        (elementwise, float64)
        out  = scheduler.step(eps, t, sample, **step_kwargs)
        sample = out.prev_sample
  * Noise: randn_tensor(shape, dtype=d) returns, for the j-th call in a case (j = 0, 1, ...
    counted over the whole case), the tensor with flat element e equal to
    math.sin(1.7*j + 0.3*e), computed in float64 and then cast to d (None means the default
    dtype, float64). The values recorded as noise_<k> are the elements of the tensor that
    was returned, so they are already rounded to d when d is float32.

Output format (one value per line, 4 whitespace-separated fields, '#' lines are comments):

    <case> <quantity> <index> <value>

  value: repr() of a Python float (shortest round-trip, at most 17 significant digits), or
         a plain integer for quantities whose tensor has an integer dtype.
  quantities:
    timesteps            index i = 0 .. len-1 (scheduler.timesteps after set_timesteps)
    sigmas               index i (only if the scheduler has a sigmas tensor)
    init_noise_sigma     index 0 (1.0 for flow matching, see above)
    alphas_cumprod       index in {0, 1, 499, 998, 999} (float32 values, as diffusers has them)
    mu                   index 0 (only for the dynamic-shifting flow-matching cases)
    x_T                  index e = 0..3, the starting sample
    model_input_<k>      index e: scale_model_input(sample, t) at loop step k (0-based)
    prev_sample_<k>      index e: step k's prev_sample
    pred_original_sample_<k>, denoised_<k>, pred_noised_sample_<k>
                         index e: the other tensors of step k's output, where the output
                         class has them and they are not None
    noise_<k>            index e: the noise drawn by randn_tensor during step k (only cases
                         that draw; at most one draw per step in every case here)
  comment lines with structure:
    #config <case> <json>    the scheduler_config.json for the case: "_class_name" plus the
                             keys that were passed to __init__ (strict JSON)
    #resolved <case> <json>  scheduler.config after __init__: every key, with defaults
                             filled in. It may contain -Infinity (DPMSolver's
                             lambda_min_clipped default); this is Python's JSON extension.
    #run <case> <json>       {"num_inference_steps": N, "set_timesteps_kwargs": {...},
                             "step_kwargs": {...}, "steps": number of step() calls,
                             "default_dtype": "float64" or "float32"}
    #dtype <case> <quantity> <torch dtype>   for timesteps, sigmas and alphas_cumprod
    #noise <case> step <k> draw <j> dtype <torch dtype>
                             one line before each noise_<k> block
"""

import argparse
import dataclasses
import enum
import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
import logging
import math
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import types

DOCUMENTED_COMMIT = "58eb52c0803ea9af3abec60841c2a093bdf1f951"

SCHEDULER_MODULES = [
    "scheduling_ddpm",
    "scheduling_ddim",
    "scheduling_euler_discrete",
    "scheduling_euler_ancestral_discrete",
    "scheduling_heun_discrete",
    "scheduling_dpmsolver_multistep",
    "scheduling_flow_match_euler_discrete",
    "scheduling_lms_discrete",
    "scheduling_unipc_multistep",
    "scheduling_deis_multistep",
    "scheduling_dpmsolver_singlestep",
    "scheduling_pndm",
    "scheduling_lcm",
    "scheduling_tcd",
    "scheduling_edm_euler",
    "scheduling_edm_dpmsolver_multistep",
    "scheduling_k_dpm_2_discrete",
    "scheduling_k_dpm_2_ancestral_discrete",
    "scheduling_ipndm",
    "scheduling_sasolver",
    "scheduling_dpmsolver_sde",
]

X_BASE = [0.5, -1.2, 0.3, 2.0]
SAMPLE_SHAPE = (1, 4, 1, 1)  # (batch, channels, height, width): step() functions index dim 1
ALPHAS_CUMPROD_INDICES = [0, 1, 499, 998, 999]


# ----------------------------------------------------------------------------------------------
# Stand-ins for the diffusers modules the scheduler files import.
# ----------------------------------------------------------------------------------------------

class NoiseState:
    """The deterministic 'random' stream of randn_tensor, and a log of the draws of one case."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.count = 0  # j: draws so far in this case
        self.step = None  # loop step k during which a draw happens (None outside step())
        self.draws = []  # (k, j, tensor)


NOISE = NoiseState()
DEPRECATIONS = []


def install_stubs(schedulers_dir):
    import torch

    def new_module(name, package_path=None):
        mod = types.ModuleType(name)
        if package_path is not None:
            mod.__path__ = [package_path]
        sys.modules[name] = mod
        return mod

    # Packages. "diffusers" and "diffusers.utils" have no real path: nothing can be imported
    # from the real package by accident. "diffusers.schedulers" points at the real folder so
    # that importlib finds the scheduling_*.py files; its __init__.py is not run.
    pkg = new_module("diffusers")
    pkg.__path__ = []
    sched_pkg = new_module("diffusers.schedulers", package_path=schedulers_dir)
    pkg.schedulers = sched_pkg

    # --- diffusers.configuration_utils ---
    cu = new_module("diffusers.configuration_utils")

    class Config(dict):
        """Read-only view of the registered __init__ arguments: item and attribute access."""

        def __getattr__(self, name):
            try:
                return self[name]
            except KeyError:
                raise AttributeError(name) from None

    class ConfigMixin:
        config_name = None
        ignore_for_config = []

        def register_to_config(self, **kwargs):
            kwargs.pop("kwargs", None)
            merged = dict(self.__dict__.get("_internal_dict", {}))
            merged.update(kwargs)
            self.__dict__["_internal_dict"] = Config(merged)

        @property
        def config(self):
            return self.__dict__["_internal_dict"]

        def __getattr__(self, name):
            # diffusers (deprecated) lets scheduler.<config key> read the config.
            internal = self.__dict__.get("_internal_dict")
            if internal is not None and name in internal:
                return internal[name]
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def register_to_config(init):
        signature = inspect.signature(init)

        @functools.wraps(init)
        def inner_init(self, *args, **kwargs):
            init_kwargs = {k: v for k, v in kwargs.items() if not k.startswith("_")}
            private_kwargs = {k: v for k, v in kwargs.items() if k.startswith("_")}
            ignore = getattr(self, "ignore_for_config", [])
            parameters = [
                (name, p.default)
                for i, (name, p) in enumerate(signature.parameters.items())
                if i > 0 and name not in ignore
            ]
            accepted = {name for name, _ in parameters}
            unknown = set(init_kwargs) - accepted
            if unknown:  # a typo in a case's config would otherwise vanish into **kwargs
                raise TypeError(f"{type(self).__name__}: unknown config keys {sorted(unknown)}")
            new_kwargs = {}
            for arg, (name, _) in zip(args, parameters):
                new_kwargs[name] = arg
            for name, default in parameters:
                if name not in new_kwargs:
                    new_kwargs[name] = init_kwargs.get(name, default)
            unused = set(new_kwargs) - set(init_kwargs)
            if unused:
                new_kwargs["_use_default_values"] = sorted(unused)
            self.register_to_config(**{**private_kwargs, **new_kwargs})
            init(self, *args, **init_kwargs)

        return inner_init

    cu.ConfigMixin = ConfigMixin
    cu.register_to_config = register_to_config
    cu.FrozenDict = Config
    pkg.configuration_utils = cu

    # --- diffusers.utils ---
    ut = new_module("diffusers.utils")

    class BaseOutput:
        """Plain base for the @dataclass output classes (attribute access is all we use)."""

    def deprecate(*args, take_from=None, standard_warn=True, stacklevel=2):
        values = []
        for entry in args if isinstance(args[0], tuple) else (args,):
            name, _version, message = entry[:3]
            DEPRECATIONS.append(f"{name}: {message}")
            if isinstance(take_from, dict) and name in take_from:
                values.append(take_from.pop(name))
        if not values:
            return None
        return values[0] if len(values) == 1 else tuple(values)

    def is_scipy_available():
        return importlib.util.find_spec("scipy") is not None

    log_mod = types.ModuleType("diffusers.utils.logging")
    log_mod.get_logger = lambda name=None: logging.getLogger(name or "diffusers")
    sys.modules["diffusers.utils.logging"] = log_mod

    ut.BaseOutput = BaseOutput
    ut.deprecate = deprecate
    ut.is_scipy_available = is_scipy_available
    ut.logging = log_mod
    pkg.utils = ut

    # --- diffusers.utils.torch_utils ---
    tu = new_module("diffusers.utils.torch_utils")

    def randn_tensor(shape, generator=None, device=None, dtype=None, layout=None):
        shape = tuple(shape)
        n = 1
        for s in shape:
            n *= s
        j = NOISE.count
        NOISE.count += 1
        values = [math.sin(1.7 * j + 0.3 * e) for e in range(n)]
        t = torch.tensor(values, dtype=torch.float64).reshape(shape)
        t = t.to(dtype if dtype is not None else torch.get_default_dtype())
        if NOISE.step is None:
            raise RuntimeError("randn_tensor called outside step()")
        NOISE.draws.append((NOISE.step, j, t.clone()))
        return t

    tu.randn_tensor = randn_tensor
    ut.torch_utils = tu

    # --- diffusers.schedulers.scheduling_utils ---
    su = new_module("diffusers.schedulers.scheduling_utils")

    KarrasDiffusionSchedulers = enum.Enum(
        "KarrasDiffusionSchedulers",
        [
            "DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "LMSDiscreteScheduler",
            "EulerDiscreteScheduler", "HeunDiscreteScheduler", "EulerAncestralDiscreteScheduler",
            "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "KDPM2DiscreteScheduler",
            "KDPM2AncestralDiscreteScheduler", "DEISMultistepScheduler", "UniPCMultistepScheduler",
            "DPMSolverSDEScheduler", "EDMEulerScheduler",
        ],
    )

    @dataclasses.dataclass
    class SchedulerOutput(BaseOutput):
        prev_sample: torch.Tensor

    class SchedulerMixin:
        config_name = "scheduler_config.json"
        _compatibles = []
        has_compatibles = True

    su.KarrasDiffusionSchedulers = KarrasDiffusionSchedulers
    su.SchedulerOutput = SchedulerOutput
    su.SchedulerMixin = SchedulerMixin
    su.SCHEDULER_CONFIG_NAME = "scheduler_config.json"
    sched_pkg.scheduling_utils = su

    # --- torchsde (not in Debian; scheduling_dpmsolver_sde imports it) ---
    # Only its BrownianInterval would be used, by BrownianTreeNoiseSampler, which load_schedulers
    # replaces by RecordedNoiseSampler; the stand-in refuses to be used.
    tsde = new_module("torchsde")

    class BrownianInterval:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("torchsde is a stand-in here: BrownianTreeNoiseSampler must be replaced")

    tsde.BrownianInterval = BrownianInterval


class RecordedNoiseSampler:
    """Stands in for DPMSolverSDEScheduler's BrownianTreeNoiseSampler (torchsde's Brownian tree).

    Each call noise_sampler(sigma, sigma_next) returns the next deterministic randn_tensor draw of the
    case (the stream described in the file header), shaped and typed like the sample, so that it is
    recorded as noise_<k> like every other draw. The tree's normalized increment is a standard normal
    per element; only its values change, not the arithmetic the scheduler does with them."""

    def __init__(self, x, sigma_min, sigma_max, seed=None, transform=lambda x: x):
        self.shape = tuple(x.shape)
        self.dtype = x.dtype

    def __call__(self, sigma, sigma_next):
        return sys.modules["diffusers.utils.torch_utils"].randn_tensor(self.shape, dtype=self.dtype)


def load_schedulers(schedulers_dir):
    install_stubs(schedulers_dir)
    classes = {}
    for name in SCHEDULER_MODULES:
        mod = importlib.import_module("diffusers.schedulers." + name)
        if hasattr(mod, "BrownianTreeNoiseSampler"):
            mod.BrownianTreeNoiseSampler = RecordedNoiseSampler
        for attr, obj in vars(mod).items():
            if isinstance(obj, type) and attr.endswith("Scheduler") and obj.__module__ == mod.__name__:
                classes[attr] = obj
    return classes


# ----------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------

SD = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}


def flux_mu(image_seq_len, base_seq_len=256, max_seq_len=4096, base_shift=0.5, max_shift=1.15):
    """The linear formula of the Flux pipeline's calculate_shift()."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    b = base_shift - m * base_seq_len
    return image_seq_len * m + b


def cases():
    """(case name, class name, config, N, set_timesteps kwargs, step kwargs, torch default dtype)."""
    out = []

    def add(name, cls, config, n, set_kwargs=None, step_kwargs=None, default_dtype="float64"):
        out.append((name, cls, config, n, set_kwargs or {}, step_kwargs or {}, default_dtype))

    # 1. DDPM, the original linear schedule, default keys.
    ddpm = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
            "variance_type": "fixed_small", "clip_sample": True}
    for n in (10, 50):
        add(f"ddpm_linear_{n}", "DDPMScheduler", ddpm, n)

    # 2. DDIM as Stable Diffusion 1.5 uses it.
    ddim_sd15 = {**SD, "set_alpha_to_one": False, "steps_offset": 1, "clip_sample": False,
                 "timestep_spacing": "leading", "prediction_type": "epsilon"}
    for n in (10, 50):
        add(f"ddim_sd15_{n}", "DDIMScheduler", ddim_sd15, n)
    add("ddim_sd15_eta1_10", "DDIMScheduler", ddim_sd15, 10, step_kwargs={"eta": 1.0})

    # 3. SD 2.1 v-prediction.
    add("ddim_sd21v_25", "DDIMScheduler", {**ddim_sd15, "prediction_type": "v_prediction"}, 25)

    # 4. Zero terminal SNR.
    add("ddim_zsnr_25", "DDIMScheduler",
        {**ddim_sd15, "rescale_betas_zero_snr": True, "timestep_spacing": "trailing",
         "prediction_type": "v_prediction"}, 25)

    # 5. Euler as SDXL.
    euler = {**SD, "steps_offset": 1, "timestep_spacing": "leading", "interpolation_type": "linear",
             "use_karras_sigmas": False, "prediction_type": "epsilon"}
    add("euler_sdxl_leading_30", "EulerDiscreteScheduler", euler, 30)
    add("euler_sdxl_linspace_30", "EulerDiscreteScheduler", {**euler, "timestep_spacing": "linspace"}, 30)
    add("euler_sdxl_trailing_30", "EulerDiscreteScheduler", {**euler, "timestep_spacing": "trailing"}, 30)
    add("euler_sdxl_karras_30", "EulerDiscreteScheduler", {**euler, "use_karras_sigmas": True}, 30)

    # 6. Euler ancestral, SD 1.5-like.
    add("euler_a_sd15_20", "EulerAncestralDiscreteScheduler",
        {**SD, "steps_offset": 1, "timestep_spacing": "linspace", "prediction_type": "epsilon"}, 20)

    # 7. Heun.
    add("heun_sd_15", "HeunDiscreteScheduler",
        {**SD, "timestep_spacing": "linspace", "prediction_type": "epsilon"}, 15)

    # 8. DPM-Solver++(2M).
    dpm = {**SD, "steps_offset": 1, "timestep_spacing": "linspace", "algorithm_type": "dpmsolver++",
           "solver_order": 2, "solver_type": "midpoint", "lower_order_final": True, "prediction_type": "epsilon"}
    for n in (10, 25):
        add(f"dpmpp2m_{n}", "DPMSolverMultistepScheduler", dpm, n)
    add("dpmpp2m_karras_20", "DPMSolverMultistepScheduler", {**dpm, "use_karras_sigmas": True}, 20)
    add("dpmpp2m_sigmamin_20", "DPMSolverMultistepScheduler", {**dpm, "final_sigmas_type": "sigma_min"}, 20)
    add("dpmpp2m_lu_20", "DPMSolverMultistepScheduler", {**dpm, "use_lu_lambdas": True}, 20)

    # 9. Flow matching (deterministic: stochastic_sampling false).
    sd3 = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": False, "stochastic_sampling": False}
    add("flowmatch_sd3_28", "FlowMatchEulerDiscreteScheduler", sd3, 28)
    flux = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5,
            "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096, "stochastic_sampling": False}
    mu = flux_mu(4096)
    add("flowmatch_flux_28", "FlowMatchEulerDiscreteScheduler", flux, 28, set_kwargs={"mu": mu})
    # As the Flux pipeline calls it: explicit sigmas = linspace(1, 1/N, N) as well as mu.
    import numpy as np
    sig = np.linspace(1.0, 1.0 / 28, 28).tolist()
    add("flowmatch_flux_pipesigmas_28", "FlowMatchEulerDiscreteScheduler", flux, 28,
        set_kwargs={"sigmas": sig, "mu": mu})
    add("flowmatch_sd3_terminal_28", "FlowMatchEulerDiscreteScheduler", {**sd3, "shift_terminal": 0.02}, 28)

    # 10. Other schedulers.
    add("lms_sd_20", "LMSDiscreteScheduler",
        {**SD, "steps_offset": 1, "timestep_spacing": "linspace", "prediction_type": "epsilon"}, 20)
    # UniPC's corrector stacks a torch.ones(()) (default dtype) with float32 values and then calls
    # torch.linalg.solve(R, b), which refuses the float64/float32 mix that a float64 default
    # dtype produces. So this case runs with torch's usual default dtype, float32; the sample and
    # the model output are still explicitly float64.
    add("unipc_bh2_20", "UniPCMultistepScheduler",
        {**SD, "steps_offset": 1, "solver_order": 2, "solver_type": "bh2", "predict_x0": True,
         "timestep_spacing": "linspace", "prediction_type": "epsilon"}, 20, default_dtype="float32")
    add("deis_20", "DEISMultistepScheduler",
        {**SD, "steps_offset": 1, "solver_order": 2, "algorithm_type": "deis", "solver_type": "logrho",
         "timestep_spacing": "linspace", "prediction_type": "epsilon"}, 20)
    add("dpmpp2s_20", "DPMSolverSinglestepScheduler",
        {**SD, "solver_order": 2, "algorithm_type": "dpmsolver++", "solver_type": "midpoint",
         "prediction_type": "epsilon"}, 20)
    add("pndm_sd15_20", "PNDMScheduler",
        {**SD, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
         "prediction_type": "epsilon"}, 20)
    lcm = {**SD, "set_alpha_to_one": True, "steps_offset": 1, "clip_sample": False, "original_inference_steps": 50,
           "timestep_spacing": "leading", "prediction_type": "epsilon"}
    add("lcm_4", "LCMScheduler", lcm, 4)
    add("tcd_eta03_4", "TCDScheduler", lcm, 4, step_kwargs={"eta": 0.3})
    add("edm_euler_20", "EDMEulerScheduler",
        {"sigma_min": 0.002, "sigma_max": 80.0, "sigma_data": 0.5, "sigma_schedule": "karras",
         "num_train_timesteps": 1000, "prediction_type": "epsilon", "rho": 7.0}, 20)
    add("edm_dpmpp2m_20", "EDMDPMSolverMultistepScheduler",
        {"sigma_min": 0.002, "sigma_max": 80.0, "sigma_data": 0.5, "sigma_schedule": "karras",
         "num_train_timesteps": 1000, "prediction_type": "epsilon", "rho": 7.0, "solver_order": 2,
         "algorithm_type": "dpmsolver++", "solver_type": "midpoint"}, 20)
    kdpm = {**SD, "steps_offset": 1, "timestep_spacing": "linspace", "prediction_type": "epsilon"}
    add("kdpm2_10", "KDPM2DiscreteScheduler", kdpm, 10)
    add("kdpm2_a_10", "KDPM2AncestralDiscreteScheduler", kdpm, 10)
    add("dpmpp3m_20", "DPMSolverMultistepScheduler", {**dpm, "solver_order": 3}, 20)
    add("sde_dpmpp2m_20", "DPMSolverMultistepScheduler", {**dpm, "algorithm_type": "sde-dpmsolver++"}, 20)
    # The third-order SDE update (whose D2 weight the C++ side reproduces only with diffusers_dpm_3m: it has
    # the sign of its 1/2 flipped, docs/conventions.md), and the noise-prediction SDE form (sde-dpmsolver,
    # which needs final_sigmas_type sigma_min), midpoint and heun.
    add("sde_dpmpp3m_20", "DPMSolverMultistepScheduler", {**dpm, "algorithm_type": "sde-dpmsolver++", "solver_order": 3}, 20)
    add("sde_dpm2m_20", "DPMSolverMultistepScheduler",
        {**dpm, "algorithm_type": "sde-dpmsolver", "final_sigmas_type": "sigma_min"}, 20)
    add("sde_dpm2m_heun_20", "DPMSolverMultistepScheduler",
        {**dpm, "algorithm_type": "sde-dpmsolver", "solver_type": "heun", "final_sigmas_type": "sigma_min"}, 20)
    # The model's timesteps of converted sigma lists: int64 tensors, rounded for Karras sigmas but not for
    # squaredcos_cap_v2 in DPMSolverMultistepScheduler, and not for exponential or beta sigmas (the int64
    # conversion truncates there).
    add("dpmpp2m_exp_20", "DPMSolverMultistepScheduler", {**dpm, "use_exponential_sigmas": True}, 20)
    add("dpmpp2m_karras_cos_20", "DPMSolverMultistepScheduler",
        {**dpm, "beta_schedule": "squaredcos_cap_v2", "use_karras_sigmas": True}, 20)
    add("dpmpp2s_beta_12", "DPMSolverSinglestepScheduler",
        {**SD, "solver_order": 2, "algorithm_type": "dpmsolver++", "solver_type": "midpoint",
         "prediction_type": "epsilon", "use_beta_sigmas": True}, 12)
    # IPNDMScheduler has its own levels (sin^2 of a uniform grid) and reads the model's output as v.
    add("ipndm_20", "IPNDMScheduler", {"num_train_timesteps": 1000}, 20)
    # DPMSolverSDEScheduler: its Brownian tree replaced by the recorded deterministic stream
    # (RecordedNoiseSampler), one draw per step() call but the last. The σ list as KDPM2's case (linspace).
    add("dpmsde_10", "DPMSolverSDEScheduler",
        {**SD, "timestep_spacing": "linspace", "prediction_type": "epsilon", "noise_sampler_seed": 0}, 10)

    # SASolverScheduler (data prediction) with its default tau_func (tau = 1 for timesteps 200..800, else 0):
    # one noise draw per step(), reused by the next step's corrector. Predictor/corrector 2/2 (the default)
    # and 3/4.
    add("sasolver_20", "SASolverScheduler",
        {**SD, "steps_offset": 1, "predictor_order": 2, "corrector_order": 2, "timestep_spacing": "linspace",
         "prediction_type": "epsilon"}, 20)
    add("sasolver_p3c4_20", "SASolverScheduler",
        {**SD, "steps_offset": 1, "predictor_order": 3, "corrector_order": 4, "timestep_spacing": "linspace",
         "prediction_type": "epsilon"}, 20)

    names = [c[0] for c in out]
    assert len(names) == len(set(names)), "case names must be unique"
    return out


# ----------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------

def fmt(x, integral):
    if integral:
        return str(int(x))
    return repr(float(x))


def model(x_in, t):
    import torch

    assert x_in.dtype == torch.float64, f"model input dtype {x_in.dtype}"
    return 0.3 * torch.sin(x_in) + 0.05 * math.cos(0.01 * float(t)) * x_in


def json_line(obj, strict=True):
    return json.dumps(obj, separators=(",", ":"), allow_nan=not strict)


def run_case(classes, case, lines):
    import torch

    name, cls_name, config, n, set_kwargs, step_kwargs, default_dtype = case
    cls = classes[cls_name]
    NOISE.reset()
    torch.set_default_dtype(getattr(torch, default_dtype))

    def emit(quantity, values, integral=False):
        for i, v in enumerate(values):
            lines.append(f"{name} {quantity} {i} {fmt(v, integral)}")

    def emit_tensor(quantity, t):
        integral = not (t.dtype.is_floating_point or t.dtype.is_complex)
        emit(quantity, t.reshape(-1).tolist(), integral)

    sched = cls(**config)
    lines.append(f"#config {name} {json_line({'_class_name': cls_name, **config})}")
    resolved = {k: v for k, v in sched.config.items() if not k.startswith("_")}
    lines.append(f"#resolved {name} {json_line(resolved, strict=False)}")

    sched.set_timesteps(n, **set_kwargs)

    timesteps = sched.timesteps
    sigmas = getattr(sched, "sigmas", None)
    if not isinstance(sigmas, torch.Tensor):
        sigmas = None
    init_sigma = getattr(sched, "init_noise_sigma", None)
    init_note = None
    if init_sigma is None:
        init_sigma = 1.0
        init_note = "no init_noise_sigma attribute: 1.0 used"

    run_info = {"num_inference_steps": n, "set_timesteps_kwargs": set_kwargs, "step_kwargs": step_kwargs,
                "steps": len(timesteps), "default_dtype": default_dtype}
    lines.append(f"#run {name} {json_line(run_info)}")
    lines.append(f"#dtype {name} timesteps {timesteps.dtype}")
    if sigmas is not None:
        lines.append(f"#dtype {name} sigmas {sigmas.dtype}")
    if init_note:
        lines.append(f"# {name}: {init_note}")

    emit_tensor("timesteps", timesteps)
    if sigmas is not None:
        emit_tensor("sigmas", sigmas)
    emit("init_noise_sigma", [float(init_sigma)])
    ac = getattr(sched, "alphas_cumprod", None)
    if isinstance(ac, torch.Tensor) and ac.numel() == 1000:
        lines.append(f"#dtype {name} alphas_cumprod {ac.dtype}")
        for i in ALPHAS_CUMPROD_INDICES:
            lines.append(f"{name} alphas_cumprod {i} {fmt(ac[i].item(), False)}")
    if "mu" in set_kwargs:
        emit("mu", [set_kwargs["mu"]])

    sample = torch.tensor(X_BASE, dtype=torch.float64).reshape(SAMPLE_SHAPE) * init_sigma
    assert sample.dtype == torch.float64
    emit_tensor("x_T", sample)

    has_scale = hasattr(sched, "scale_model_input")
    if not has_scale:
        lines.append(f"# {name}: no scale_model_input: model_input_<k> is the sample itself")
    for k, t in enumerate(timesteps):
        # FlowMatchEulerDiscreteScheduler has no scale_model_input: its pipelines feed the sample.
        x_in = sched.scale_model_input(sample, t) if has_scale else sample
        eps = model(x_in, t)
        NOISE.step = k
        out = sched.step(eps, t, sample, **step_kwargs)
        NOISE.step = None
        emit_tensor(f"model_input_{k}", x_in)
        prev = out.prev_sample
        assert prev.dtype == torch.float64, f"{name}: prev_sample dtype {prev.dtype} at step {k}"
        emit_tensor(f"prev_sample_{k}", prev)
        for field in dataclasses.fields(out):
            if field.name == "prev_sample":
                continue
            value = getattr(out, field.name)
            if isinstance(value, torch.Tensor):
                emit_tensor(f"{field.name}_{k}", value)
        draws = [d for d in NOISE.draws if d[0] == k]
        assert len(draws) <= 1, f"{name}: {len(draws)} noise draws in step {k}"
        for _, j, noise in draws:
            lines.append(f"#noise {name} step {k} draw {j} dtype {noise.dtype}")
            emit_tensor(f"noise_{k}", noise)
        sample = prev

    assert torch.isfinite(sample).all(), f"{name}: non-finite final sample"
    torch.set_default_dtype(torch.float64)
    return len(timesteps), len(NOISE.draws)


def find_schedulers_dir(src):
    for cand in (os.path.join(src, "src", "diffusers", "schedulers"), os.path.join(src, "diffusers", "schedulers"),
                 os.path.join(src, "schedulers"), src):
        if os.path.isfile(os.path.join(cand, "scheduling_ddpm.py")):
            return os.path.abspath(cand)
    sys.exit(f"no diffusers schedulers folder found under {src}")


def extract_from_git(git_dir, rev, dest):
    commit = subprocess.run(["git", f"--git-dir={git_dir}", "rev-parse", f"{rev}^{{commit}}"],
                            check=True, capture_output=True, text=True).stdout.strip()
    archive = subprocess.run(["git", f"--git-dir={git_dir}", "archive", "--format=tar", commit,
                              "src/diffusers/schedulers"], check=True, capture_output=True).stdout
    tar_path = os.path.join(dest, "schedulers.tar")
    with open(tar_path, "wb") as f:
        f.write(archive)
    with tarfile.open(tar_path) as tf:
        tf.extractall(dest)
    return commit, os.path.join(dest, "src", "diffusers", "schedulers")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--src", help="extracted diffusers tree (the folder holding src/diffusers, or below)")
    group.add_argument("--git-dir", help="a diffusers git directory; --rev is extracted from it")
    ap.add_argument("--rev", default="HEAD", help="revision to extract with --git-dir (default HEAD)")
    ap.add_argument("--commit", default=None,
                    help=f"commit of the --src tree, for the header (default {DOCUMENTED_COMMIT}, the documented one)")
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("-o", "--output", default=os.path.join(repo_root, "tests", "data", "diffusers_schedulers.ref"))
    args = ap.parse_args()

    tmp = None
    if args.git_dir:
        tmp = tempfile.TemporaryDirectory(prefix="diffusers-src-")
        commit, schedulers_dir = extract_from_git(args.git_dir, args.rev, tmp.name)
    else:
        commit = args.commit or DOCUMENTED_COMMIT
        schedulers_dir = find_schedulers_dir(args.src)

    import numpy as np
    import scipy
    import torch

    torch.set_default_dtype(torch.float64)
    logging.basicConfig(level=logging.ERROR)

    classes = load_schedulers(schedulers_dir)

    lines = []
    summary = []
    for case in cases():
        steps, draws = run_case(classes, case, lines)
        summary.append(f"#   {case[0]:<30} {case[1]:<32} N={case[3]:<3} steps={steps:<3} noise_draws={draws}")

    hashes = []
    for mod in SCHEDULER_MODULES:
        with open(os.path.join(schedulers_dir, mod + ".py"), "rb") as f:
            hashes.append(f"#   sha256 {hashlib.sha256(f.read()).hexdigest()} {mod}.py")

    header = [
        "# diffusers scheduler reference data, written by tools/gen_diffusers_reference.py",
        "# (the real diffusers scheduler classes, run with in-memory stand-ins for the rest of the package).",
        f"# diffusers commit: {commit}",
        f"# torch {torch.__version__}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"python {platform.python_version()}",
        "# torch.set_default_dtype(torch.float64) (except where a #run line says \"default_dtype\":\"float32\");",
        "# diffusers' own float32 tables and casts are kept as they are. Sample shape (1, 4, 1, 1).",
        "#",
        "# Data lines: <case> <quantity> <index> <value>",
        "#   value: Python repr() of a float (shortest round-trip), or an integer for integer tensors.",
        "#   quantities: timesteps, sigmas, init_noise_sigma, alphas_cumprod (indices 0 1 499 998 999), mu,",
        "#     x_T, and for each loop step k (0-based, one step() call each): model_input_<k>, prev_sample_<k>,",
        "#     pred_original_sample_<k> / denoised_<k> / pred_noised_sample_<k> (where step() returns them),",
        "#     noise_<k> (the noise drawn inside step k). Per-step indices are the element index 0..3.",
        "# Loop: x_T = init_noise_sigma * [0.5, -1.2, 0.3, 2.0] (flow matching: init_noise_sigma = 1);",
        "#   for k, t in enumerate(timesteps): x_in = scale_model_input(sample, t);",
        "#   eps = 0.3*sin(x_in) + 0.05*cos(0.01*float(t))*x_in; sample = step(eps, t, sample, **step_kwargs).prev_sample",
        "# Noise: the j-th randn_tensor call of a case (j = 0, 1, ...) returns sin(1.7*j + 0.3*e) for flat element e,",
        "#   computed in float64 and cast to the requested dtype; noise_<k> holds the returned values.",
        "# Comment lines: #config <case> <json> (scheduler_config.json: _class_name + keys passed),",
        "#   #resolved <case> <json> (full config with defaults; may contain -Infinity),",
        "#   #run <case> <json> (N, set_timesteps kwargs, step kwargs, number of steps, torch default dtype),",
        "#   #dtype <case> <quantity> <dtype>, #noise <case> step <k> draw <j> dtype <dtype>.",
        "#",
        "# Cases:",
        *summary,
        "# Scheduler sources used:",
        *hashes,
    ]
    if DEPRECATIONS:
        header.append("# deprecate() was called: " + " | ".join(sorted(set(DEPRECATIONS))))

    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="ascii", newline="\n") as f:
        f.write("\n".join(header + lines) + "\n")
    data_lines = sum(1 for line in lines if not line.startswith("#"))
    print(f"wrote {args.output}: {len(cases())} cases, {data_lines} values, {os.path.getsize(args.output)} bytes")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
