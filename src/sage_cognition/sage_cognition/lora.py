"""LoRA adapters for the embedded language model: train, validate, save. ROS-free.

``train_adapter`` fine-tunes a LoRA adapter (peft; q/v projections) of the
model held by a LocalBackend on (messages, response) exchanges, with the loss
on the response tokens only, a small learning rate and a time bound, saves it
(safetensors, peft's format) and takes the adapter off the model again, so
the base weights never change. ``perplexity`` on general text and
``repetition_rate`` of generations are the checks against LoRA collapse that
the sleep node validates with, beside ``answer_loss`` on held-out exchanges;
the cognition node hot-swaps saved adapters through ``LocalBackend.load_adapter``.

A committed adapter is one state dict (``torch.save``-able, loaded with
``weights_only=True``): ``{'format': 'sage-lora-1', 'adapter_config': <peft's
adapter_config.json as a dict, or None for the base model>, 'tensors': <the
adapter's tensors, as in adapter_model.safetensors>}``. ``adapter_state`` and
``write_adapter`` convert between it and peft's adapter directory.
"""

from __future__ import annotations

import json
import math
import os
import time

from sage_cognition.thought import repetition_rate

GENERAL_TEXT = (
    'The sun rises in the east and sets in the west.',
    'Water boils at one hundred degrees Celsius at sea level.',
    'A robot uses its sensors to perceive the world around it.',
    'Please close the door when you leave the room.',
)


FORMAT = 'sage-lora-1'
CONFIG_FILE, WEIGHTS_FILE = 'adapter_config.json', 'adapter_model.safetensors'


def base_state() -> dict:
    """Return the state that means "no adapter": the base model (a LoRA store's v1)."""
    return {'format': FORMAT, 'adapter_config': None, 'tensors': {}}


def adapter_state(path: str) -> dict:
    """Read peft's adapter directory at ``path`` into a committable state."""
    from safetensors.torch import load_file
    with open(os.path.join(path, CONFIG_FILE)) as f:
        config = json.load(f)
    tensors = load_file(os.path.join(path, WEIGHTS_FILE))
    return {'format': FORMAT, 'adapter_config': config,
            'tensors': {k: v.contiguous() for k, v in tensors.items()}}


def write_adapter(state: dict, path: str) -> str:
    """Write a state as peft's adapter directory at ``path``; return it ('' for the base).

    Raises ValueError for a state that is not a LoRA adapter of this format.
    """
    from safetensors.torch import save_file
    if not isinstance(state, dict) or state.get('format') != FORMAT:
        raise ValueError(f'not a {FORMAT} adapter state')
    if state.get('adapter_config') is None:
        return ''
    config, tensors = state['adapter_config'], state.get('tensors') or {}
    if not isinstance(config, dict) or not tensors:
        raise ValueError('adapter state without a config or tensors')
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, CONFIG_FILE), 'w') as f:
        json.dump(config, f, indent=1)
    save_file({k: v.detach().contiguous() for k, v in tensors.items()},
              os.path.join(path, WEIGHTS_FILE))
    return path


def unpack_checkpoint(version_dir: str, sha256: str, tmp_prefix: str = 'sage-lora-') -> str:
    """Check a committed version's weights.pt against ``sha256``; unpack it for peft.

    Return the adapter folder, inside a new temporary folder the caller removes
    (its parent), or '' when the version is the base model. The file is read
    once, so what is checked is what is loaded. Raises ValueError or OSError.
    """
    import hashlib
    import io
    import shutil
    import tempfile

    import torch
    with open(os.path.join(version_dir, 'weights.pt'), 'rb') as f:
        blob = f.read()
    if not sha256:
        raise ValueError('a checkpoint announced without a sha256')
    if hashlib.sha256(blob).hexdigest() != sha256:
        raise ValueError('its weights.pt does not match the announced sha256')
    try:
        state = torch.load(io.BytesIO(blob), map_location='cpu', weights_only=True)
    except Exception as exc:  # torch raises many kinds for a bad file
        raise ValueError(f'unreadable weights.pt: {exc}') from exc
    folder = tempfile.mkdtemp(prefix=tmp_prefix)
    try:
        return write_adapter(state, os.path.join(folder, 'adapter'))
    finally:
        if not os.path.isdir(os.path.join(folder, 'adapter')):
            shutil.rmtree(folder, ignore_errors=True)


def _batch(tok, messages, response):
    """Token ids of prompt + response and labels that mask the prompt (-100)."""
    import torch
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    p_ids = tok(prompt, add_special_tokens=False)['input_ids']
    r_ids = tok(response + tok.eos_token, add_special_tokens=False)['input_ids']
    ids = torch.tensor([p_ids + r_ids])
    labels = torch.tensor([[-100] * len(p_ids) + r_ids])
    return ids, labels


def train_adapter(backend, exchanges: list[tuple[list, str]], out_dir: str,
                  time_budget_s: float = 60.0, max_steps: int = 200, lr: float = 5e-4,
                  rank: int = 8, seed: int = 0, progress=None, init: str = '') -> dict:
    """Train and save a LoRA adapter; return {'steps', 'loss_first', 'loss_last', 'seconds'}.

    ``init``: an adapter directory to continue training from (its rank wins);
    '' starts a new adapter from the base model.
    """
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    if not exchanges:
        raise ValueError('no exchanges to learn from')
    torch.manual_seed(seed)
    with backend._lock:
        backend.load()
        base = backend.base_model()
        tok = backend._tok
        if init:
            model = PeftModel.from_pretrained(base, init, is_trainable=True)
        else:
            model = get_peft_model(base, LoraConfig(r=rank, lora_alpha=2 * rank,
                                                    target_modules=['q_proj', 'v_proj'],
                                                    lora_dropout=0.0, task_type='CAUSAL_LM'))
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
        batches = [_batch(tok, m, r) for m, r in exchanges]
        start, losses = time.monotonic(), []
        model.train()
        try:
            for step in range(max_steps):
                ids, labels = batches[step % len(batches)]
                loss = model(input_ids=ids, labels=labels).loss
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                losses.append(loss.item())
                if progress:
                    progress((step + 1) / max_steps, losses[-1])
                if time.monotonic() - start > time_budget_s:
                    break
            model.eval()
            model.save_pretrained(out_dir)
        finally:
            backend._model = model.unload()      # the base, without the adapter
            backend.adapter = None
    return {'steps': len(losses), 'loss_first': losses[0], 'loss_last': losses[-1],
            'seconds': time.monotonic() - start}


def perplexity(backend, texts=GENERAL_TEXT) -> float:
    """Perplexity of the backend's current model (with its adapter, if any) on ``texts``."""
    import torch
    with backend._lock:
        backend.load()
        nll = count = 0.0
        with torch.inference_mode():
            for text in texts:
                ids = backend._tok(text, return_tensors='pt')['input_ids']
                loss = backend._model(input_ids=ids, labels=ids).loss
                nll += float(loss) * (ids.shape[1] - 1)
                count += ids.shape[1] - 1
    return math.exp(nll / max(1.0, count))


def answer_loss(backend, exchanges: list[tuple[list, str]]) -> float:
    """Mean loss per answer token of the backend's current model on (messages, answer)."""
    import torch
    with backend._lock:
        backend.load()
        nll = count = 0.0
        with torch.inference_mode():
            for messages, answer in exchanges:
                ids, labels = _batch(backend._tok, messages, answer)
                n = int((labels[0, 1:] != -100).sum())
                if n:
                    nll += float(backend._model(input_ids=ids, labels=labels).loss) * n
                    count += n
    return nll / max(1.0, count)


def generation_repetition(backend, prompts: list[list[dict]], max_tokens: int = 32) -> float:
    """Mean repetition rate of greedy generations (LoRA collapse repeats itself)."""
    rates = [repetition_rate(backend.generate(p, max_tokens).text) for p in prompts]
    return sum(rates) / max(1, len(rates))
