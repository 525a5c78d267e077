"""The `vllm` backend: vLLM's async engine in this process, many answers at once (continuous batching).

vLLM's `AsyncLLM` lives on an asyncio loop in a thread of its own; `stream` is a plain generator (what Gradio
handlers and the conversation service consume) that bridges each request's async outputs through a queue. Stop
aborts the request inside vLLM, so its KV blocks are freed at once. Engine settings: fp32 on the CPU, bf16 on GPUs;
`EVE_VLLM_ENGINE_ARGS` (JSON) adds or overrides any of vLLM's engine arguments (e.g. `{"tensor_parallel_size": 2}`).
With LoRA on (GPUs; a CPU when asked), the model picker serves a job's adapter on this same engine (`set_adapter`).
"""

import asyncio
import atexit
import contextlib
import itertools
import json
import logging
import os
import queue
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from model import EveConfig
from model.loading import resolve_checkpoint
from model.processing_eve import EveProcessor

from ..errors import UserError
from .adapters import read_adapter
from .prompts import PreparedPrompt, sampling_fields
from .retry import RetryableError, with_one_retry
from .sent_images import SentImages
from .types import ChatRequest, GenerationRecord
from .vllm_common import VllmBackend

log = logging.getLogger(__name__)
_ids = itertools.count()


# Compiling switches vLLM's own CPU kernels (rotary embedding and others) off in favour of plain PyTorch that inductor
# fuses; the steps with image rows run eagerly, though, and took 33 ms instead of 37 (about 600 tokens) with them on.
CPU_COMPILATION = {"custom_ops": ["all"]}


def engine_args(folder: str, device: str, dtype: str | None) -> dict:
    """vLLM engine arguments for the app; the CPU defaults fit a 2-core, 24 GiB machine (see platform notes)."""
    on_cpu = device == "cpu"
    args = {
        "model": folder,
        "dtype": dtype or ("float32" if on_cpu else "bfloat16"),
        "max_num_seqs": 16,
        "enable_prefix_caching": True,
        "disable_log_stats": True,
        # On a GPU: no CUDA graphs or compilation, untried there (no GPU in this project's tests); override with
        # {"enforce_eager": false} in EVE_VLLM_ENGINE_ARGS to try them.
        "enforce_eager": True,
        # LoRA adapters of fine-tune jobs, picked in the chat without a restart: ranks up to 16 (jobs default to 8),
        # two adapters in a batch (the one picked, and the one before it while its last answers finish). Off on a
        # CPU unless asked for ({"enable_lora": true}): vLLM does not compile a model with LoRA on there, and the
        # eager text path is slower (see the README).
        "enable_lora": not on_cpu,
        "max_lora_rank": 16,
        "max_loras": 2,
    }
    if on_cpu:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the default share does not fit here
        # The model's worker inside the engine core's process (AsyncLLM always runs the engine core in a child
        # process, apart from the app's interpreter lock; this setting only keeps vLLM's CPU platform from adding a
        # worker process). Two processes hand every step over through queues whose readers spin and compete with the
        # model for the same cores: a decode step of 8 answers took 14.2 ms that way and 4.6 ms in one process.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        args.update(gpu_memory_utilization=0.2, block_size=32, distributed_executor_backend="uni")
        # vLLM's processor cache keeps processed images (1 GiB here, 4 by default), so a follow-up turn does not
        # resize and normalise the conversation's earlier images again: 31 ms to the first token instead of 110 for a
        # question about a 1856x1408 image. A request that fails after its images were processed can leave the
        # cache out of step; vLLM then ends the next request with that image at once with a retryable error, and
        # `stream` sends it again (eve_app/serving/retry.py).
        args["mm_processor_cache_gb"] = 1
        # The text-only path compiled (model/vllm/modeling.py): the model's part of a decode step of 8 answers took
        # 1.6 ms instead of 2.5. Inductor builds C++ kernels with the system compiler (about 20 s at the first start,
        # cached on disk after); without one the engine runs eagerly.
        compiler = os.environ.get("CXX", "g++")  # what inductor calls on Linux
        args["enforce_eager"] = shutil.which(compiler) is None
        if args["enforce_eager"]:
            log.warning("No C++ compiler (%s) for torch.compile: the vLLM engine runs eagerly", compiler)
        else:
            args["compilation_config"] = dict(CPU_COMPILATION)
    args.update(json.loads(os.environ.get("EVE_VLLM_ENGINE_ARGS", "{}")))
    return args


class VllmEngine(VllmBackend):
    """One AsyncLLM shared by every visitor; `concurrency_limit` answers stream at once."""

    restart_hint = (
        "The vLLM backend serves the model it was started with and its LoRA adapters; restart the app to change the "
        "model."
    )

    def __init__(
        self,
        engine,
        loop: asyncio.AbstractEventLoop,
        processor: EveProcessor,
        config: EveConfig,
        name: str,
        checkpoint_dir: str,
        dtype: str,
        device: str,
    ):
        self._engine, self._loop = engine, loop
        self.processor, self.config = processor, config
        self.name, self.checkpoint_dir, self.dtype, self.device = name, checkpoint_dir, dtype, device
        self.base_name = name
        self._lora = None  # the LoRARequest every new request carries (None: the base model)
        self._lora_ids: dict[str, int] = {}  # adapter folder -> vLLM's id for it (loaded adapters stay cached)
        self.concurrency_limit = int(engine.vllm_config.scheduler_config.max_num_seqs)
        self.quantization = None
        self.sent_images = SentImages()
        # Extra SamplingParams fields for every request (benchmarks fix the answer length with ignore_eos).
        self.sampling_overrides: dict = {}

    @classmethod
    def load(cls, path: str, device: str = "cpu", dtype: str | None = None) -> "VllmEngine":
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        folder = str(resolve_checkpoint(path))
        args = engine_args(folder, device, dtype)
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, name="vllm-engine-loop", daemon=True).start()

        async def create():
            return AsyncLLM.from_engine_args(AsyncEngineArgs(**args))

        started = time.perf_counter()
        with _engine_core_environment(device):
            engine = asyncio.run_coroutine_threadsafe(create(), loop).result()
        log.info("vLLM engine for %s ready in %.1f s", folder, time.perf_counter() - started)
        config = EveConfig.from_pretrained(folder)
        processor = EveProcessor.from_pretrained(folder, config)
        served = cls(engine, loop, processor, config, Path(str(path)).name, folder, args["dtype"], device)
        _stop_with_the_process(served)
        return served

    def shutdown(self) -> None:
        if self._loop.is_running():
            self._engine.shutdown()
            self._loop.call_soon_threadsafe(self._loop.stop)

    def set_adapter(self, name: str | None, path: str | None = None) -> None:
        """New requests go to the LoRA adapter in `path` (shown as `name`), or to the base model for None. vLLM
        loads the adapter here, so a bad one is refused now rather than at the next question."""
        if name is None:
            self._lora, self.name = None, self.base_name
            return
        from vllm.lora.request import LoRARequest

        adapter = read_adapter(path or "", name)
        if adapter is None:
            raise UserError(f"{path} holds no LoRA adapter (adapter_config.json).")
        lora_config = self._engine.vllm_config.lora_config
        if lora_config is None:
            raise UserError(
                "This vLLM engine runs without LoRA adapters; restart the app with "
                "EVE_VLLM_ENGINE_ARGS='{\"enable_lora\": true}' to pick them (on a CPU, vLLM then runs uncompiled)."
            )
        if adapter.rank > lora_config.max_lora_rank:
            raise UserError(
                f"{adapter.name} has LoRA rank {adapter.rank}; this engine takes ranks up to "
                f"{lora_config.max_lora_rank}: restart the app with EVE_VLLM_ENGINE_ARGS='{{\"max_lora_rank\": 64}}'."
            )
        lora_id = self._lora_ids.setdefault(adapter.path, len(self._lora_ids) + 1)
        request = LoRARequest(adapter.name, lora_id, adapter.path)
        try:
            asyncio.run_coroutine_threadsafe(self._engine.add_lora(request), self._loop).result(timeout=300)
        except Exception as error:  # noqa: BLE001 -- vLLM raises several kinds; its message says what does not fit
            log.warning("vLLM refused the adapter %s: %s", adapter.path, error)
            raise UserError(f"vLLM could not load the adapter {adapter.name}: {error}") from None
        self._lora, self.name = request, adapter.name

    @property
    def gpu_count(self) -> int:
        return 0 if self.device == "cpu" else int(self._engine.vllm_config.parallel_config.world_size)

    @property
    def context_length(self) -> int:
        return int(self._engine.vllm_config.model_config.max_model_len)

    def describe(self) -> str:
        model = f"{self.name} (LoRA on {self.base_name})" if self._lora else self.name
        return f"{model} · vLLM on {self.device} · {self.dtype} · up to {self.concurrency_limit} answers at once"

    def _generate(
        self, request: ChatRequest, prompt: PreparedPrompt, record: GenerationRecord, start: float
    ) -> Iterator[str]:
        request_id = f"eve-{next(_ids)}"
        lora = self._lora  # the model picked when the question came; a switch meanwhile does not change it
        return with_one_retry(
            lambda attempt: self._attempt(prompt, request, record, f"{request_id}-{attempt}", start, attempt, lora),
            request,
            record,
        )

    def _attempt(
        self,
        prompt: PreparedPrompt,
        request: ChatRequest,
        record: GenerationRecord,
        request_id: str,
        start: float,
        attempt: int,
        lora=None,
    ) -> Iterator[str]:
        """Streams one vLLM request's text pieces; raises RetryableError when vLLM ends it with an error, or refuses
        it while images it was thought to hold went by id only (the second attempt sends every image)."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        fields = {**sampling_fields(request.settings, self.processor.stop_token_ids), **self.sampling_overrides}
        params = SamplingParams(**fields, output_kind=RequestOutputKind.DELTA)
        inputs: dict = {"prompt": prompt.text}
        images = prompt.images if attempt == 0 else prompt.with_pixels(self.processor.image_processor)
        max_size = request.settings.image_max_size
        if images:
            inputs["multi_modal_data"] = {"image": images}
            inputs["multi_modal_uuids"] = {"image": prompt.image_ids}
            if max_size:
                inputs["mm_processor_kwargs"] = {"max_size": int(max_size)}
        by_id_only = any(image is None for image in images)
        events: queue.Queue = queue.Queue()
        done = object()

        async def run() -> None:
            try:
                async for output in self._engine.generate(inputs, params, request_id, lora_request=lora):
                    events.put(output)
            except BaseException as error:  # noqa: BLE001 -- handed to the consumer below
                events.put(error)
            finally:
                events.put(done)

        future = asyncio.run_coroutine_threadsafe(run(), self._loop)
        finished, finish_reason, accepted = False, None, False
        try:
            while True:
                try:
                    item = events.get(timeout=0.05)
                except queue.Empty:
                    if request.stop_event.is_set():
                        break
                    continue
                if item is done:
                    finished = True
                    break
                if isinstance(item, BaseException):
                    if by_id_only and not accepted:  # most likely evicted from vLLM's processor cache
                        raise RetryableError(f"vLLM refused the request: {item}") from item
                    raise item
                if not accepted:  # vLLM processed the images: later turns can send them by id
                    accepted = True
                    self.sent_images.remember_sent(images, prompt.image_ids, max_size)
                completion = item.outputs[0]
                if completion.token_ids:
                    if record.new_tokens == 0:
                        record.time_to_first_token = time.perf_counter() - start
                    record.new_tokens += len(completion.token_ids)
                if item.prompt_token_ids:
                    record.prompt_tokens = len(item.prompt_token_ids)
                finish_reason = completion.finish_reason or finish_reason
                if completion.text:
                    yield completion.text
                if request.stop_event.is_set():
                    break
        finally:
            if not finished:  # stopped, or the consumer went away: end the generation inside vLLM too
                asyncio.run_coroutine_threadsafe(self._engine.abort(request_id), self._loop).result(timeout=10)
                future.cancel()
        if finish_reason == "error":
            raise RetryableError("The vLLM engine failed on this request; please try again.")


def engine_core_threads() -> int:
    """OpenMP threads for the engine core on a CPU: one core fewer than this process may use, at least one.

    The engine core (a process of its own) runs the model on OpenMP threads that spin at every barrier, while the app's
    process (HTTP server, Gradio's queue, the handlers, vLLM's input processing and detokenising) needs a core of its
    own for every answer: on 2 cores, with the engine on both, each wait of an OpenMP thread for a core stalled every
    step (the engine core spent 150-700 ms of CPU an answer against 28-50 ms on one thread; docs/benchmarks.md, many
    visitors through the app)."""
    return max(1, len(os.sched_getaffinity(0)) - 1)


@contextlib.contextmanager
def _engine_core_environment(device: str) -> Iterator[None]:
    """While the engine core's process starts (it reads its environment then): OMP_NUM_THREADS on a CPU, unless set.
    Set for that moment only: fine-tune jobs the app starts later share the cores out by OMP_NUM_THREADS."""
    if device != "cpu" or "OMP_NUM_THREADS" in os.environ:
        yield
        return
    os.environ["OMP_NUM_THREADS"] = str(engine_core_threads())
    try:
        yield
    finally:
        os.environ.pop("OMP_NUM_THREADS", None)


def _stop_with_the_process(engine: VllmEngine) -> None:
    """vLLM's engine runs in child processes that outlive a SIGTERM'd app (`docker stop`, a service manager):
    exit through Python on SIGTERM, and shut the engine down on exit."""
    atexit.register(engine.shutdown)
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


__all__ = ["VllmEngine", "engine_args"]
