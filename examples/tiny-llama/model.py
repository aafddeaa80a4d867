"""model.py: a byte-level Llama in plain PyTorch, saved and loaded as a
Hugging Face model directory without transformers.

The modules and parameter names are those of transformers' LlamaForCausalLM
(model.embed_tokens, model.layers.N.self_attn.q_proj, ..., model.norm,
lm_head), and so is the arithmetic (RMSNorm in float32 with the weight
applied after the cast back, rotary embeddings by rotate_half, SiLU-gated
MLP), so that the directory written by save() loads in transformers (for
trace-capture) and computes the same function there as here.  Here it needs
only torch (1.13 or later) and the standard library: make check loads the
small model shipped in the repository on a machine without transformers.

Tokens: bytes 0..255 are themselves, BOS = 256 starts every sequence, EOS =
257.  The tokenizer files are a byte-level BPE with no merges, which the
tokenizers library (transformers' fast tokenizer) reads."""
import json
import math
import os
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

BOS, EOS, VOCAB = 256, 257, 258


def config(layers=8, hidden=512, heads=8, intermediate=None, max_positions=2048):
    """A Llama configuration as transformers spells it (config.json)."""
    if intermediate is None:
        intermediate = 8 * round(hidden * 8 / 3 / 8)  # Llama's 8/3 ratio, a multiple of 8
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": VOCAB,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "head_dim": hidden // heads,
        "hidden_act": "silu",
        "max_position_embeddings": max_positions,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": BOS,
        "eos_token_id": EOS,
        "pad_token_id": None,
        "torch_dtype": "bfloat16",
        "use_cache": False,
    }


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Rotary(nn.Module):
    def __init__(self, head_dim, theta):
        super().__init__()
        inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv, persistent=False)

    def forward(self, x, T):
        pos = torch.arange(T, device=x.device, dtype=torch.float32)
        freqs = torch.outer(pos, self.inv_freq.to(x.device))
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def attend(q, k, v):
    """Causal attention on [B, H, T, D]; scaled_dot_product_attention where
    torch has it (2.0 and later), the same arithmetic by hand before."""
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    T = q.shape[-2]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
    scores = scores.masked_fill(mask, float("-inf"))
    return scores.float().softmax(-1).to(q.dtype) @ v


class LlamaAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.heads, self.head_dim = c.num_attention_heads, c.head_dim
        width = self.heads * self.head_dim
        self.q_proj = nn.Linear(c.hidden_size, width, bias=False)
        self.k_proj = nn.Linear(c.hidden_size, width, bias=False)
        self.v_proj = nn.Linear(c.hidden_size, width, bias=False)
        self.o_proj = nn.Linear(width, c.hidden_size, bias=False)

    def forward(self, x, rope):
        B, T, _ = x.shape
        cos, sin = rope

        def split(t):
            return t.view(B, T, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        out = attend(q, k, v).transpose(1, 2).reshape(B, T, -1)
        return self.o_proj(out)


class LlamaMLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = LlamaAttention(c)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = LlamaMLP(c)

    def forward(self, h, rope):
        h = h + self.self_attn(self.input_layernorm(h), rope)
        return h + self.mlp(self.post_attention_layernorm(h))


class LlamaModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(c) for _ in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.rotary = Rotary(c.head_dim, c.rope_theta)

    def forward(self, input_ids):
        h = self.embed_tokens(input_ids)
        rope = self.rotary(h, input_ids.shape[1])
        for layer in self.layers:
            h = layer(h, rope)
        return self.norm(h)


class LlamaForCausalLM(nn.Module):
    """Logits [B, T, vocab] from input_ids [B, T]."""

    def __init__(self, cfg):
        super().__init__()
        self.config = SimpleNamespace(**cfg)
        self.model = LlamaModel(self.config)
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def forward(self, input_ids):
        return self.lm_head(self.model(input_ids))


# ---------------------------------------------------------------- safetensors
# The format (github.com/huggingface/safetensors): an 8-byte little-endian
# header length, a JSON header of name -> dtype, shape and byte offsets, then
# the tensors' bytes.  Written and read here with torch alone.

_DTYPES = {torch.float32: ("F32", torch.int32), torch.bfloat16: ("BF16", torch.int16),
           torch.float16: ("F16", torch.int16)}
_NAMES = {name: (dtype, raw) for dtype, (name, raw) in _DTYPES.items()}


def save_safetensors(tensors, path):
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        blob = t.view(_DTYPES[t.dtype][1]).numpy().tobytes()
        header[name] = {"dtype": _DTYPES[t.dtype][0], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for blob in blobs:
            f.write(blob)
    os.replace(path + ".tmp", path)


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    base, out = 8 + n, {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, raw = _NAMES[info["dtype"]]
        begin, end = info["data_offsets"]
        buf = bytearray(data[base + begin:base + end])
        t = torch.frombuffer(buf, dtype=raw) if hasattr(torch, "frombuffer") else \
            torch.tensor(list(memoryview(buf).cast("h" if raw == torch.int16 else "i")), dtype=raw)
        out[name] = t.view(dtype).reshape(info["shape"])
    return out


# ---------------------------------------------------------------- tokenizer

def bytes_to_unicode():
    """GPT-2's printable stand-ins for the 256 bytes, which the tokenizers
    library's ByteLevel pre-tokenizer maps bytes to."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + \
        list(range(0xAE, 0x100))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def _special(token_id, content):
    return {"id": token_id, "content": content, "single_word": False, "lstrip": False,
            "rstrip": False, "normalized": False, "special": True}


def tokenizer_files():
    """tokenizer.json and tokenizer_config.json: bytes as their own ids, BOS
    in front of every text (as Llama's tokenizer does)."""
    chars = bytes_to_unicode()
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                  "use_regex": False}
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [_special(BOS, "<s>"), _special(EOS, "</s>")],
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [BOS], "tokens": ["<s>"]}},
        },
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {chars[b]: b for b in range(256)}, "merges": []},
    }
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>",
                        "eos_token": "</s>", "add_bos_token": True, "add_eos_token": False,
                        "model_max_length": 1 << 20, "clean_up_tokenization_spaces": False}
    return tokenizer, tokenizer_config


def encode(text):
    """What the tokenizer files do to a text: BOS, then its UTF-8 bytes."""
    return [BOS] + list(text.encode("utf-8"))


# ---------------------------------------------------------------- directories

def save(model, directory, dtype=torch.bfloat16):
    os.makedirs(directory, exist_ok=True)
    cfg = dict(vars(model.config))
    cfg["torch_dtype"] = str(dtype).replace("torch.", "")
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    tensors = {k: v.to(dtype) for k, v in model.state_dict().items()}
    save_safetensors(tensors, os.path.join(directory, "model.safetensors"))
    tokenizer, tokenizer_config = tokenizer_files()
    with open(os.path.join(directory, "tokenizer.json"), "w") as f:
        json.dump(tokenizer, f, ensure_ascii=False)
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config, f, indent=2)
    with open(os.path.join(directory, "special_tokens_map.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>"}, f, indent=2)


def load(directory, dtype=torch.float32):
    with open(os.path.join(directory, "config.json")) as f:
        cfg = json.load(f)
    model = LlamaForCausalLM(cfg)
    state = load_safetensors(os.path.join(directory, "model.safetensors"))
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()})
    return model.to(dtype).eval()
