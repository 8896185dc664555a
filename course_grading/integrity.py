"""Integrity: a second, plain-Python run of the tests that the student's kernel cannot steer.

The first run of a submission (:class:`course_grading.kernel.SandboxedExecute`)
happens in an IPython kernel, whose machinery a notebook can rewire from any
cell: input and AST transformers, event hooks, a replaced ``run_cell`` or
display hook, a tracing function that jumps over ``assert`` lines. However the
student reaches that machinery (``get_ipython()``, the shell class's
singleton, attribute names built at run time), it only changes how *later
cells are run*, so it is caught by behaviour rather than by names:

* :func:`check_run` runs the same cells again in a fresh jail, in a plain
  Python process (no IPython: there is no shell to rewire), one cell after
  another with ``exec``, except the lab's demonstrations (:data:`DEMONSTRATIONS`;
  a disagreement without them is confirmed with every cell). The process can be
  started ahead (:func:`start_check`): it is forked, with the lab's modules
  imported, from the grading worker's warm process (:mod:`course_grading.zygote`),
  or, where that cannot be used, a fresh interpreter imports them while the
  kernel runs. The harness (:data:`HARNESS`) refuses tracing and
  profiling hooks (``sys.settrace``, ``sys.setprofile``, and interpreter symbols
  and the frame-locals writers reached through ``ctypes``) with an audit hook, which cannot be removed, and
  puts back built-in functions the student replaced before each test cell.
* only the test cells that passed in the first run are re-run; a test that
  passed in the kernel and fails here means the kernel ran something other
  than the test: the submission is *held* for review with that evidence
  (:func:`compare`), its score is not exported.
* while a test runs here, the reference implementations the lab forbids for
  that part (:data:`DELEGATES`) are instrumented: a call that comes from the
  student's code rather than from the test itself is *delegation*, and that
  test scores 0 with a message saying why.

What it does not stop: code written against this harness that reads its
frames to forge the result line, or writes the interpreter's memory through
``ctypes``; see ``instructors.md``. Everything here runs in the grader's worker
process; only :data:`HARNESS` runs in the jail. Example::

    result = check_run(cells, spec)          # doctest: +SKIP
    held, zeroed = compare(primary, result)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

__all__ = ["DELEGATES", "DEMONSTRATIONS", "HARNESS", "Cell", "CheckResult", "CheckSpec", "check_run", "compare",
           "forks_warm", "prewarm", "resume_plan", "start_check", "to_python"]

#: Per lab and test cell, the reference implementations a student's answer must not call
#: (``module:attribute`` or ``module:Class.method``). The test cell itself may call them.
DELEGATES: dict[str, dict[str, list[str]]] = {
    "lab01_next_word": {
        "test_bigram_counts": ["course_utils.rnn:ngram_counts"],
        "test_perplexity": ["course_utils.rnn:NGramLM.perplexity"],
        "test_rnn_step": ["course_utils.rnn:rnn_step"],
    },
    "lab02_attention": {
        "test_attention": ["course_utils.attention:scaled_dot_product_attention",
                           "torch.nn.functional:scaled_dot_product_attention"],
        "test_causal_mask": ["course_utils.attention:causal_mask"],
        "test_multi_head_attention": ["course_utils.attention:MultiHeadAttention.forward",
                                      "torch.nn.functional:multi_head_attention_forward"],
    },
    "lab03_tokenization": {
        "test_pairs_merge": ["course_utils.tokenization:get_pair_counts", "course_utils.tokenization:merge"],
        "test_train_bpe": ["course_utils.tokenization:BPETokenizer.train", "course_utils.tokenization:train_hf_bpe"],
        "test_encode_decode": ["course_utils.tokenization:BPETokenizer.encode",
                               "course_utils.tokenization:BPETokenizer.decode"],
    },
    "lab04_gpt": {
        "test_span_corrupt": ["course_utils.data:span_corrupt"],
    },
    "lab06_decoding": {
        "test_apply_temperature": ["course_utils.sampling:apply_temperature"],
        "test_top_k_filter": ["course_utils.sampling:top_k_filter"],
        "test_top_p_filter": ["course_utils.sampling:top_p_filter"],
        "test_generate": ["course_utils.sampling:decoding_loop", "course_utils.sampling:sample_next",
                          "course_utils.sampling:filtered_distribution",
                          "course_utils.transformer:DecoderOnlyLM.generate"],
        "test_metrics": ["course_utils.sampling:repetition_rate", "course_utils.sampling:distinct_n"],
    },
    "lab07_pretraining": {
        "test_exact_dedup": ["course_utils.curation:exact_dedup"],
        "test_near_dedup": ["course_utils.curation:near_dedup", "course_utils.curation:jaccard"],
        "test_gopher_quality": ["course_utils.curation:gopher_quality"],
    },
    "lab08_memory": {
        "test_weight_memory": ["course_utils.memory:model_memory"],
        "test_training_memory": ["course_utils.memory:training_memory"],
        "test_absmax": ["course_utils.quantization:absmax_quantize", "course_utils.quantization:absmax_dequantize"],
        "test_zeropoint": ["course_utils.quantization:zeropoint_quantize",
                           "course_utils.quantization:zeropoint_dequantize"],
        "test_size_perplexity": ["course_utils.quantization:model_size_bytes"],
    },
    "lab09_distributed": {
        "test_per_device_bytes": ["course_utils.memory:sharded_memory"],
        "test_compute_optimal": ["course_utils.scaling:compute_optimal"],
        "test_communication": ["course_utils.memory:communication_volume"],
    },
    # lab 10's tests compare with transformers' Llama and T5 code: those are forbidden to answers too
    "lab10_modern_blocks": {
        "test_rms_norm": ["course_utils.transformer:RMSNorm.forward", "torch.nn.functional:rms_norm", "torch:rms_norm",
                          "transformers.models.llama.modeling_llama:LlamaRMSNorm.forward"],
        "test_rope": ["course_utils.attention:rotary_cos_sin", "course_utils.attention:apply_rotary",
                      "transformers.models.llama.modeling_llama:LlamaRotaryEmbedding.forward",
                      "transformers.models.llama.modeling_llama:apply_rotary_pos_emb",
                      "transformers.models.llama.modeling_llama:rotate_half"],
        "test_relative_position_bucket": ["course_utils.attention:relative_position_bucket",
                                          "transformers.models.t5.modeling_t5:T5Attention._relative_position_bucket"],
        "test_grouped_query_attention": ["course_utils.attention:repeat_kv",
                                         "course_utils.attention:MultiHeadAttention.forward",
                                         "transformers.models.llama.modeling_llama:repeat_kv",
                                         "torch.nn.functional:scaled_dot_product_attention"],
        "test_swiglu": ["course_utils.transformer:MLP.forward",
                        "transformers.models.llama.modeling_llama:LlamaMLP.forward"],
    },
}

#: Per lab, the lab's own (read-only) cells before its last test that only demonstrate: no later cell reads a
#: name they bind (``tests/test_integrity.py`` checks it), so the re-run skips them; they still run in the
#: student's kernel, whose outputs the feedback shows. Skipping a cell can only make the re-run disagree with
#: the kernel, never agree where the student's own code fails a test (the re-run still runs every cell of the
#: student's and the test itself); a disagreement is confirmed by re-running every cell before a hold.
DEMONSTRATIONS: dict[str, list[str]] = {
    "lab01_next_word": ["bigram_demo", "perplexity_demo", "memory_demo"],
    "lab03_tokenization": ["compare_hf", "plot_pe"],
    "lab04_gpt": ["gpt_from_blocks", "corpus", "train_run", "train_plot", "sample", "mlm_demo"],
    "lab05_prompting": ["tokenizer_demo", "tasks_demo", "builders", "predict_demo", "curve", "too_long_demo"],
    "lab06_decoding": ["temperature_demo", "filters_demo", "generate_demo"],
    "lab07_pretraining": ["corpus", "pipeline", "scaling_run"],
    "lab08_memory": ["measure", "error_plot", "compare_schemes"],
    "lab09_distributed": ["memory_plot", "train_dp", "budget"],
}

# The harness: run in the jail as ``python -I -c HARNESS FD``. It reads one cell at a time
# (a JSON line) from stdin and writes one result line per cell to file descriptor FD.
HARNESS = r'''
import builtins, json, os, signal, sys


FORBIDDEN = ("PyEval_SetTrace", "PyEval_SetProfile", "PyFrame_LocalsToFast", "PyFrame_FastToLocals",
             "PyFrame_FastToLocalsWithError", "PyEval_SetProfileAllThreads", "PyEval_SetTraceAllThreads")


def _main(fd):
    write, dumps, loads, compile_, exec_, getframe = os.write, json.dumps, json.loads, compile, exec, sys._getframe
    readline, type_name = sys.stdin.buffer.readline, type.__dict__["__name__"].__get__
    state = {"cell": None, "delegated": []}
    kinds = {}

    def send(**record):
        write(fd, (dumps(record) + "\n").encode())

    def hook(event, args):
        if event in ("sys.settrace", "sys.setprofile") or (
                event == "ctypes.dlsym" and isinstance(args[1], str) and args[1].lstrip("_") in FORBIDDEN):
            send(evidence=f"tried to install a tracing hook or reach the interpreter's internals ({event})")
            raise RuntimeError(f"{event} is not allowed while grading")

    sys.addaudithook(hook)
    sys.path.insert(0, "")

    class Shell:  # get_ipython() outside IPython: magics do nothing here
        def __getattr__(self, name):
            return lambda *a, **k: None

    shell = Shell()
    ns = {"__name__": "__main__", "__builtins__": builtins, "get_ipython": lambda: shell,
          "display": lambda *a, **k: None}

    def instrument(target, names):
        module, _, qual = target.partition(":")
        try:
            owner = __import__(module, fromlist=["_"])
            *path, last = qual.split(".")
            for part in path:
                owner = getattr(owner, part)
            original = getattr(owner, last)
        except Exception:
            return

        def spy(*args, **kwargs):
            if state["cell"] is not None and target in names.get(state["cell"], ()):
                frame = getframe(1)
                while frame is not None:
                    kind = kinds.get(frame.f_code.co_filename)
                    if kind is not None:
                        if kind != "test" and target not in state["delegated"]:
                            state["delegated"].append(target)
                        break
                    frame = frame.f_back
            return original(*args, **kwargs)

        setattr(owner, last, spy)
        if not path:  # a function: also where its module and packages bind it under the same name
            for mod in list(sys.modules.values()):
                if getattr(mod, "__dict__", {}).get(last) is original:
                    setattr(mod, last, spy)

    def alarm(signum, frame):
        raise TimeoutError("the cell ran past its time limit")

    signal.signal(signal.SIGALRM, alarm)
    saved = dict(builtins.__dict__)
    first = loads(readline())
    for module in first.get("preload", []):  # the lab's own imports, which its first cells make anyway
        try:
            __import__(module)
        except BaseException:
            pass
    delegates = first.get("delegates", {})
    for target in sorted({t for ts in delegates.values() for t in ts}):
        instrument(target, delegates)
    send(ready=True)
    while True:
        line = readline()
        if not line:
            return
        job = loads(line)
        name = f"<cell-{job['token']}>"
        kinds[name] = job["kind"]
        if job["kind"] == "test":
            changed = sorted(k for k, v in saved.items() if builtins.__dict__.get(k) is not v)
            for k in changed:
                setattr(builtins, k, saved[k])
            if changed:
                send(evidence=f"replaced built-in functions: {', '.join(changed)}")
            state["cell"], state["delegated"] = job.get("grade_id"), []
        error = ""
        signal.setitimer(signal.ITIMER_REAL, job["timeout"])
        try:
            exec_(compile_(job["code"], name, "exec"), ns)
        except BaseException as e:
            args = getattr(e, "args", ())
            message = args[0] if args and type(args[0]) is str else ""
            error = f"{type_name(type(e))}: {message[:300]}".rstrip(": ")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            state["cell"] = None
        send(done=job["index"], token=job["token"], ok=not error, error=error, delegated=list(state["delegated"]))


_main(int(sys.argv[1]))
'''


@dataclass
class Cell:
    """A code cell to re-run: its index in the notebook, its kind (``'test'``,
    ``'solution'``, ``'locked'`` or ``''``), its grade id and its Python code."""

    index: int
    kind: str
    code: str
    grade_id: str = ""


@dataclass
class CheckSpec:
    """Where and how the check runs (the same limits as the kernel's)."""

    scratch: str
    control: str
    jail: bool = True
    memory_mb: int = 4096
    uid: int = 62000
    env: dict[str, str] = field(default_factory=dict)
    cell_timeout: float = 300
    deadline: float = 600
    delegates: dict[str, list[str]] = field(default_factory=dict)
    preload: list[str] = field(default_factory=list)  # modules imported before any cell (the lab's own imports)
    warm: bool = True  # fork the process from the worker's warm one (:mod:`course_grading.zygote`) where possible


@dataclass
class CheckResult:
    """What the plain-Python run saw: per test cell index ``(passed, error)``,
    per test cell index the forbidden references called from the student's
    code, and evidence of tampering found along the way."""

    tests: dict[int, tuple[bool, str]] = field(default_factory=dict)
    delegated: dict[int, list[str]] = field(default_factory=dict)
    evidence: list[str] = field(default_factory=list)
    seconds: float = 0.0


def to_python(source: str) -> str:
    """A cell's text as plain Python (IPython's own translation of ``%magic`` and ``!cmd``)."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001 - a cell that does not parse runs as it is and fails as it would
        return source


def resume_plan(kinds: list[str], killer: int, skip: set[int] = frozenset()) -> tuple[list[int], int]:
    """After the kernel was killed in cell ``killer``: the cells to replay in a fresh kernel
    (every earlier non-test code cell, except those in ``skip``) and the index to resume at:
    the first solution cell after a test cell at or after ``killer`` when it was killed in a
    part's solution or test cell (``len(kinds)`` if none), the next cell when it was killed in
    any other cell (a demonstration belongs to no part). ``kinds`` gives each cell's kind,
    ``None`` for a cell that is not code.

    Example: kinds ``['locked', 'solution', 'test', 'solution', 'test']`` killed in cell 2
    -> ``([0, 1], 3)``.
    """
    replay = [i for i in range(killer) if kinds[i] is not None and kinds[i] != "test" and i not in skip]
    if kinds[killer] not in ("test", "solution"):
        return replay, killer + 1
    resume, seen_test = len(kinds), False
    for j in range(killer, len(kinds)):
        if kinds[j] == "test":
            seen_test = True
        elif kinds[j] == "solution" and seen_test:
            resume = j
            break
    return replay, resume


class _Harness:
    """One plain-Python process in a jail, fed one cell at a time. It starts at once: it imports
    ``spec.preload`` and instruments ``spec.delegates`` while the caller does something else, and
    :meth:`ready` waits for it."""

    def __init__(self, spec: CheckSpec, deadline: float):
        from course_grading.sandbox import JailSpec, dies_with_grader, jail_command, python_paths

        self.spec, self.deadline, self.buffer = spec, deadline, b""
        work = os.path.join(spec.scratch, "work")
        env = _program_env(spec.env)
        self.evidence: list[str] = []
        self.zygote = None  # the warm process this one was forked from, if any
        self._ready = False
        if spec.jail:
            if os.geteuid() == 0:
                for folder, _, files in os.walk(spec.scratch):
                    for name in [folder, *(os.path.join(folder, f) for f in files)]:
                        os.chown(name, spec.uid, spec.uid, follow_symlinks=False)
            js = JailSpec(scratch=spec.scratch, workdir=work, readonly=python_paths(), memory_mb=spec.memory_mb,
                          uid=spec.uid, env=env, status_file=os.path.join(spec.control, "check.status"))
            spec_path = os.path.join(spec.control, "check.json")
            zygote = _warm(spec.preload, env) if spec.warm else None
            if zygote is not None:  # fork from the worker's warm process: the same jail, modules imported
                js.home, js.env = zygote.home, zygote.environment(env)
                jail_command(["check"], js, spec_path=spec_path)
                try:
                    self.proc, self.read = zygote.spawn(spec_path, HARNESS)
                except OSError:
                    _discard(zygote)
                else:
                    self.zygote = zygote
                    try:
                        self.send({"delegates": spec.delegates, "preload": spec.preload})
                    except OSError:  # the child is gone already: ready() says so, check_run starts a fresh one
                        pass
                    return
                js.home, js.env = "", env
            read, write = os.pipe()
            argv = jail_command([sys.executable, "-I", "-c", HARNESS, str(write)], js, spec_path=spec_path)
            preexec = None
        else:
            from course_grading.kernel import _unsandboxed_limits

            read, write = os.pipe()
            argv = [sys.executable, "-I", "-c", HARNESS, str(write)]
            preexec = _unsandboxed_limits(spec.memory_mb)
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, pass_fds=(write,), cwd=work, env=env,
                                     start_new_session=True, preexec_fn=dies_with_grader(preexec))
        os.close(write)
        self.read = read
        self.send({"delegates": spec.delegates, "preload": spec.preload})

    def ready(self, timeout: float = 120) -> bool:
        """Whether the process set itself up (within ``timeout`` seconds)."""
        if not self._ready:
            self._ready = (self.receive(timeout) or {}).get("ready") is True
        return self._ready

    def send(self, record: dict) -> None:
        self.proc.stdin.write((json.dumps(record) + "\n").encode())
        self.proc.stdin.flush()

    def receive(self, timeout: float) -> dict | None:
        """The next result line (evidence lines are collected on the way), or None when the
        process ended or ``timeout`` passed."""
        end = min(time.monotonic() + timeout, self.deadline)
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                try:
                    record = json.loads(line)
                except ValueError:
                    self.evidence.append("the check run's result channel was written to by the submission")
                    continue
                if not isinstance(record, dict):
                    continue
                if "evidence" in record:
                    if str(record["evidence"])[:200] not in self.evidence:
                        self.evidence.append(str(record["evidence"])[:200])
                    continue
                return record
            left = end - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.read], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.read, 65536)
            if not chunk:
                return None
            self.buffer += chunk
            if len(self.buffer) > 2**20:
                self.evidence.append("the check run's result channel was flooded by the submission")
                return None

    def close(self) -> None:
        try:
            if isinstance(self.proc, subprocess.Popen):
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.kill()  # a zygote's child: its jail's init and everything in it go with it
        except OSError:
            pass
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait()
        os.close(self.read)


_ZYGOTES: dict[tuple, object] = {}  # this worker's warm processes, by (modules, environment)


def _warm(preload: list[str], env: dict[str, str]):
    """This worker's :class:`course_grading.zygote.Zygote` for ``preload`` and ``env`` when it is ready
    to fork; ``None`` while it is still importing (it is started on the first call) or where it cannot
    be used: the caller then starts a fresh interpreter."""
    from course_grading import zygote

    if not zygote.usable():
        return None
    key = _zygote_key(preload, env)
    warm = _ZYGOTES.get(key)
    if warm is None:
        for old in [k for k, v in _ZYGOTES.items() if v][:-1]:  # a worker grades one lab: keep two at most
            _ZYGOTES.pop(old).close()
        try:
            _ZYGOTES[key] = zygote.Zygote(preload, env)
        except OSError:
            _ZYGOTES[key] = False
        return None
    try:
        return warm if warm and warm.ready(0) else None
    except OSError:
        _discard(warm)
        return None


def _zygote_key(preload: list[str], env: dict[str, str]) -> tuple:
    """Checks that can share a warm process: the same modules and the same environment but for the
    home folder (each check's own, bound where the zygote's was)."""
    from course_grading.zygote import PER_CHECK

    return tuple(preload), tuple(sorted((k, v) for k, v in env.items() if k not in PER_CHECK))


def _program_env(env: dict[str, str]) -> dict[str, str]:
    """The environment of a check's program: the jail's, with matplotlib drawing off screen."""
    return {**env, "MPLBACKEND": "Agg"}


def forks_warm(spec: CheckSpec, wait: float = 0) -> bool:
    """Whether a check of ``spec`` started now or later is forked from a warm process (which this
    starts if need be, and waits up to ``wait`` seconds for): such a check costs nothing to start,
    so it need not be started ahead."""
    if not (spec.jail and spec.warm):
        return False
    env = _program_env(spec.env)
    key = _zygote_key(spec.preload, env)
    _warm(spec.preload, env)
    warm = _ZYGOTES.get(key)
    if warm and wait > 0:
        try:
            warm.ready(wait)
        except OSError:
            _discard(warm)
    return bool(_ZYGOTES.get(key))


def prewarm(preload: list[str], env: dict[str, str]) -> None:
    """Start the warm process that checks with these ``preload`` modules and this jail environment
    (its ``HOME`` aside) will fork from, without waiting for it (nothing happens where none can be used)."""
    _warm(preload, _program_env(env))


def _discard(warm) -> None:
    """Stop using a zygote that failed (the check falls back to fresh interpreters)."""
    for key, value in list(_ZYGOTES.items()):
        if value is warm:
            _ZYGOTES[key] = False
    warm.close()


def start_check(spec: CheckSpec) -> _Harness:
    """Start the plain-Python process of a check run now (it imports ``spec.preload`` meanwhile), to
    hand to :func:`check_run` later; the caller closes it (``.close()``) if it never does."""
    return _Harness(spec, time.monotonic() + spec.deadline)


def check_run(cells: list[Cell], spec: CheckSpec, harness: _Harness | None = None) -> CheckResult:
    """Run ``cells`` (notebook order; test cells only those to check) in a fresh plain-Python
    jail and report which tests pass there. A process killed in a cell (it ignored the time
    limit, or died) is replaced by a fresh one that replays the earlier non-test cells and
    resumes at the next part (:func:`resume_plan`). ``harness``: a process from
    :func:`start_check` with the same ``spec`` and no cell run yet, used first (and closed)."""
    started = time.monotonic()
    deadline = started + spec.deadline
    result = CheckResult()
    kinds: list[str | None] = [None] * (max((c.index for c in cells), default=-1) + 1)
    for c in cells:
        kinds[c.index] = c.kind
    by_index = {c.index: c for c in cells}
    position, replay, skip, restarts = 0, [], set(), 0
    order = [c.index for c in cells]
    try:
        while position < len(order):
            if harness is None:
                harness = _Harness(spec, deadline)
            harness.deadline = deadline
            if harness.zygote is not None and not harness.ready(30):
                # a warm process's child that did not start says nothing about the submission: the same
                # check in a fresh interpreter, and no more forks from that zygote
                _discard(harness.zygote)
                harness.close()
                spec = dataclasses.replace(spec, warm=False)
                harness = _Harness(spec, deadline)
            if not harness.ready():
                result.evidence += harness.evidence
                for i in order[position:]:
                    if kinds[i] == "test":
                        result.tests[i] = (False, "the check run did not start")
                return result
            killed_at = None
            for i in [*replay, *order[position:]]:
                cell = by_index[i]
                token = secrets.token_hex(8)
                timeout = spec.cell_timeout
                harness.send({"index": i, "token": token, "kind": cell.kind, "grade_id": cell.grade_id,
                              "code": cell.code, "timeout": timeout})
                record = harness.receive(timeout + 10)
                if record is None:
                    killed_at = i
                    break
                if record.get("done") != i or record.get("token") != token:
                    harness.evidence.append("the check run's result channel was forged by the submission")
                    killed_at = i
                    break
                if cell.kind == "test" and i not in replay:
                    result.tests[i] = (bool(record.get("ok")), str(record.get("error", ""))[:300])
                    if record.get("delegated"):
                        result.delegated[i] = [str(t) for t in record["delegated"]][:5]
                if "ran past its time limit" in str(record.get("error", "")):
                    skip.add(i)
                if i in order[position:]:
                    position = order.index(i) + 1
            for line in harness.evidence:
                if line not in result.evidence:
                    result.evidence.append(line)
            harness.close()
            harness = None
            if killed_at is None:
                break
            how = "ran past the notebook's time limit" if time.monotonic() >= deadline else "was stopped or died"
            if kinds[killed_at] == "test":
                result.tests[killed_at] = (False, f"the check run {how} in this cell")
            restarts += 1
            skip.add(killed_at)
            replay, resume = resume_plan(kinds, killed_at, skip)
            for i in order:
                if killed_at < i < resume and kinds[i] == "test":
                    result.tests.setdefault(i, (False, "not run: the check run was stopped before it"))
            position = next((k for k, i in enumerate(order) if i >= resume), len(order))
            if restarts > 3 or time.monotonic() >= deadline:
                for i in order[position:]:
                    if kinds[i] == "test":
                        result.tests.setdefault(i, (False, "not run: the check run was stopped"))
                break
    finally:
        if harness is not None:
            harness.close()
        result.seconds = time.monotonic() - started
    return result


def compare(names: dict[int, str], passed_in_kernel: set[int], check: CheckResult) -> tuple[list[str], dict[int, str]]:
    """The evidence to hold a submission for (empty: nothing to hold) and the test cells to
    zero for delegation (index -> message). ``names`` maps test cell indices to grade ids."""
    evidence, zeroed = [], {}
    for i in sorted(passed_in_kernel):
        ok, error = check.tests.get(i, (False, "not run by the check"))
        if not ok:
            evidence.append(f"'{names[i]}' passed in the notebook's kernel but failed when re-run without "
                            f"IPython ({error or 'no result'})")
    if evidence:
        evidence += check.evidence
    for i, targets in check.delegated.items():
        zeroed[i] = ("the answer calls " + ", ".join(t.replace(":", ".") for t in targets) +
                     ", the reference implementation of this part: the answer must be your own "
                     "(see what the lab allows you to import)")
    return evidence, zeroed
