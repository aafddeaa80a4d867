"""test_python_models.py: tiny models built from torch.nn in the shape of each
acttrace catalogue (module names and tensor layouts as in Hugging Face
transformers), the recording points each catalogue must find in them, and
the helpers the other Python capture tests share.

Run alone, it checks acttrace.points() against the expected tables below,
which are written from the catalogue specification, not from the catalogue
code: names, layers, components, modules, directions, channels, and the 26
site types of RecurrentGemma.

Skips (exit 77) when torch is not importable or libacttrace was built with
sanitizers (Python cannot load an ASan library)."""
import math
import os
import sys
from types import SimpleNamespace


def skip(message):
    print(f"SKIP: {message}")
    sys.exit(77)


def need_acttrace():
    """Import torch and acttrace, or skip the test with a clear reason."""
    if os.environ.get("ACTTRACE_SANITIZERS") == "1":
        skip("libacttrace is built with sanitizers; Python cannot load an ASan library")
    try:
        import torch  # noqa: F401
    except ImportError:
        skip(f"torch is not importable by {sys.executable} (on Debian: apt-get install python3-torch)")
    try:
        import acttrace
    except ImportError as e:
        if "sanitizers" in str(e):
            skip(str(e))
        raise
    return acttrace


acttrace = need_acttrace()
import torch  # noqa: E402
from torch import nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


class Checker:
    """Counts checks, remembers failures, never stops early."""

    def __init__(self):
        self.checks = 0
        self.failures = []
        self.context = ""

    def ok(self, cond, message):
        self.checks += 1
        if not cond:
            text = f"{self.context}: {message}" if self.context else message
            self.failures.append(text)
            print(f"FAIL {text}")
        return bool(cond)

    def done(self, name):
        print(f"{name}: {self.checks} checks, {len(self.failures)} failures")
        sys.exit(1 if self.failures else 0)


# ---------------------------------------------------------------- building blocks

class RMSNorm(nn.Module):
    def __init__(self, dim, offset=False, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dim) * 0.1 + (0.0 if offset else 1.0))
        self.offset, self.eps = offset, eps

    def forward(self, x):
        y = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        w = (1.0 + self.weight.float()) if self.offset else self.weight.float()
        return (y * w).type_as(x)


def causal_attention(q, k, v, heads, kv_heads):
    """q [B, T, H*D], k/v [B, T, KV*D] -> [B, T, H*D] (grouped-query, causal)."""
    B, T, width = q.shape
    d = width // heads
    q = q.view(B, T, heads, d).transpose(1, 2)
    k = k.view(B, T, kv_heads, d).transpose(1, 2).repeat_interleave(heads // kv_heads, dim=1)
    v = v.view(B, T, kv_heads, d).transpose(1, 2).repeat_interleave(heads // kv_heads, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
    scores = scores.masked_fill(mask, float("-inf"))
    out = scores.softmax(-1) @ v
    return out.transpose(1, 2).reshape(B, T, width)


def plant_outliers(embedding, channels, scale):
    with torch.no_grad():
        for c in channels:
            embedding.weight[:, c] *= scale


# ---------------------------------------------------------------- Llama-style

class LlamaAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.heads, self.kv_heads = c.num_attention_heads, c.num_key_value_heads
        d = c.hidden_size // c.num_attention_heads
        self.q_proj = nn.Linear(c.hidden_size, self.heads * d, bias=False)
        self.k_proj = nn.Linear(c.hidden_size, self.kv_heads * d, bias=False)
        self.v_proj = nn.Linear(c.hidden_size, self.kv_heads * d, bias=False)
        self.o_proj = nn.Linear(self.heads * d, c.hidden_size, bias=False)

    def forward(self, x):
        out = causal_attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads,
                               self.kv_heads)
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
        self.input_layernorm = RMSNorm(c.hidden_size)
        self.self_attn = LlamaAttention(c)
        self.post_attention_layernorm = RMSNorm(c.hidden_size)
        self.mlp = LlamaMLP(c)

    def forward(self, hidden_states, attention_mask=None):
        h = hidden_states + self.self_attn(self.input_layernorm(hidden_states))
        h = h + self.mlp(self.post_attention_layernorm(h))
        return (h,)  # a tuple, as older transformers' decoder layers return


class LlamaModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(c) for _ in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size)

    def forward(self, input_ids=None, inputs_embeds=None):
        h = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        for layer in self.layers:
            h = layer(h, attention_mask=None)[0]
        return self.norm(h)


class LlamaForCausalLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.config = c
        self.model = LlamaModel(c)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def forward(self, input_ids=None, inputs_embeds=None):
        return self.lm_head(self.model(input_ids, inputs_embeds))


# ---------------------------------------------------------------- GPT-2

class Conv1D(nn.Module):
    """Hugging Face's GPT-2 "Conv1D": a linear layer with weight [in, out]."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.2)
        self.bias = nn.Parameter(torch.randn(nf) * 0.1)

    def forward(self, x):
        shape = x.shape[:-1] + (self.nf,)
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(shape)


class GPT2Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.heads = c.n_head
        self.c_attn = Conv1D(3 * c.n_embd, c.n_embd)
        self.c_proj = Conv1D(c.n_embd, c.n_embd)

    def forward(self, x):
        q, k, v = self.c_attn(x).split(x.shape[-1], dim=2)
        return self.c_proj(causal_attention(q, k, v, self.heads, self.heads))


class GPT2MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_fc = Conv1D(4 * c.n_embd, c.n_embd)
        self.c_proj = Conv1D(c.n_embd, 4 * c.n_embd)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class GPT2Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c.n_embd)
        self.attn = GPT2Attention(c)
        self.ln_2 = nn.LayerNorm(c.n_embd)
        self.mlp = GPT2MLP(c)

    def forward(self, hidden_states, layer_past=None):
        h = hidden_states + self.attn(self.ln_1(hidden_states))
        h = h + self.mlp(self.ln_2(h))
        return (h, None)


class GPT2Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = nn.Embedding(c.n_positions, c.n_embd)
        self.h = nn.ModuleList(GPT2Block(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.LayerNorm):
                    m.weight.normal_(1.0, 0.1)
                    m.bias.normal_(0.0, 0.1)

    def forward(self, input_ids):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        h = self.wte(input_ids) + self.wpe(positions)
        for block in self.h:
            h = block(h)[0]
        return self.ln_f(h)


class GPT2LMHeadModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.config = c
        self.transformer = GPT2Model(c)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)

    def get_input_embeddings(self):
        return self.transformer.wte

    def forward(self, input_ids):
        return self.lm_head(self.transformer(input_ids))


# ---------------------------------------------------------------- Mamba

class MambaMixer(nn.Module):
    def __init__(self, c):
        super().__init__()
        inner, self.rank, self.state = c.intermediate_size, c.time_step_rank, c.state_size
        self.in_proj = nn.Linear(c.hidden_size, 2 * inner, bias=False)
        self.conv1d = nn.Conv1d(inner, inner, kernel_size=c.conv_kernel, groups=inner,
                                padding=c.conv_kernel - 1)
        self.x_proj = nn.Linear(inner, self.rank + 2 * self.state, bias=False)
        self.dt_proj = nn.Linear(self.rank, inner, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, self.state + 1).float()).repeat(inner, 1))
        self.D = nn.Parameter(torch.ones(inner))
        self.out_proj = nn.Linear(inner, c.hidden_size, bias=False)

    def forward(self, x):
        B, T, _ = x.shape
        projected = self.in_proj(x).transpose(1, 2)              # [B, 2I, T]
        h, gate = projected.chunk(2, dim=1)
        h = F.silu(self.conv1d(h)[..., :T])                       # [B, I, T]
        params = self.x_proj(h.transpose(1, 2))                   # [B, T, R + 2S]
        dt, Bm, Cm = torch.split(params, [self.rank, self.state, self.state], dim=-1)
        dt = F.softplus(self.dt_proj(dt)).transpose(1, 2)         # [B, I, T]
        A = -torch.exp(self.A_log)                                # [I, S]
        state = torch.zeros(B, h.shape[1], self.state)
        outputs = []
        for t in range(T):
            dA = torch.exp(A[None] * dt[:, :, t, None])
            state = dA * state + dt[:, :, t, None] * Bm[:, None, t, :] * h[:, :, t, None]
            outputs.append((state @ Cm[:, t, :, None])[..., 0])
        y = torch.stack(outputs, dim=-1) + h * self.D[None, :, None]
        y = y * F.silu(gate)                                      # [B, I, T]
        return self.out_proj(y.transpose(1, 2))                   # a non-contiguous input


class WeightsOnlyMambaMixer(MambaMixer):
    """transformers 5's mixer: conv1d and dt_proj are used through their
    weights, never called, so no hook on them can fire."""

    def forward(self, x):
        B, T, _ = x.shape
        h, gate = self.in_proj(x).transpose(1, 2).chunk(2, dim=1)
        h = F.silu(F.conv1d(h, self.conv1d.weight, self.conv1d.bias, padding=self.conv1d.padding,
                            groups=self.conv1d.groups)[..., :T])
        params = self.x_proj(h.transpose(1, 2))
        dt = params[..., :self.rank]
        dt = F.softplus(dt @ self.dt_proj.weight.t() + self.dt_proj.bias)
        y = h * dt.transpose(1, 2) * F.silu(gate)
        return self.out_proj(y.transpose(1, 2))


class MambaBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = RMSNorm(c.hidden_size)
        self.mixer = MambaMixer(c)

    def forward(self, hidden_states, cache_params=None):
        return hidden_states + self.mixer(self.norm(hidden_states))


class MambaModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(MambaBlock(c) for _ in range(c.num_hidden_layers))
        self.norm_f = RMSNorm(c.hidden_size)

    def forward(self, input_ids):
        h = self.embeddings(input_ids)
        for layer in self.layers:
            h = layer(h, cache_params=None)
        return self.norm_f(h)


class MambaForCausalLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.config = c
        self.backbone = MambaModel(c)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)

    def forward(self, input_ids):
        return self.lm_head(self.backbone(input_ids))


# ---------------------------------------------------------------- RecurrentGemma

class RecurrentGemmaRglru(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.recurrent_param = nn.Parameter(torch.rand(c.lru_width) + 0.5)
        self.input_gate = nn.Parameter(torch.randn(c.lru_width) * 0.5)
        self.recurrent_gate = nn.Parameter(torch.randn(c.lru_width) * 0.5)

    def forward(self, x, position_ids):
        a = torch.exp(-8.0 * torch.sigmoid(x * self.recurrent_gate) * F.softplus(self.recurrent_param))
        gated = x * torch.sigmoid(x * self.input_gate) * torch.sqrt(1 - a * a)
        state = torch.zeros_like(gated[:, 0])
        out = torch.empty_like(gated)
        for t in range(x.shape[1]):
            state = a[:, t] * state + gated[:, t]
            out[:, t] = state
        return out


class RecurrentGemmaRecurrentBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.linear_y = nn.Linear(c.hidden_size, c.lru_width)
        self.linear_x = nn.Linear(c.hidden_size, c.lru_width)
        self.linear_out = nn.Linear(c.lru_width, c.hidden_size)
        self.conv_1d = nn.Conv1d(c.lru_width, c.lru_width, kernel_size=c.conv1d_width,
                                 groups=c.lru_width, padding=c.conv1d_width - 1)
        self.rg_lru = RecurrentGemmaRglru(c)

    def forward(self, input_states, position_ids, attention_mask, cache_position=None,
                use_cache=False):
        T = input_states.shape[1]
        y = F.gelu(self.linear_y(input_states), approximate="tanh")
        x = self.linear_x(input_states).transpose(1, 2)          # [B, C, T]
        x = self.conv_1d(x)[..., :T]                               # conv output [B, C, T+3]
        x = self.rg_lru(x.transpose(1, 2), position_ids)
        return self.linear_out(x * y)


class RecurrentGemmaSdpaAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.heads, self.kv_heads, d = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.q_proj = nn.Linear(c.hidden_size, self.heads * d, bias=False)
        self.k_proj = nn.Linear(c.hidden_size, self.kv_heads * d, bias=False)
        self.v_proj = nn.Linear(c.hidden_size, self.kv_heads * d, bias=False)
        self.o_proj = nn.Linear(self.heads * d, c.hidden_size, bias=True)

    def forward(self, hidden_states, position_ids=None, attention_mask=None, cache_position=None,
                use_cache=False):
        x = hidden_states
        out = causal_attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads,
                               self.kv_heads)
        return self.o_proj(out)


class RecurrentGemmaMlp(nn.Module):
    def __init__(self, c):
        super().__init__()
        width = c.intermediate_size // 2
        self.gate_proj = nn.Linear(c.hidden_size, width)
        self.up_proj = nn.Linear(c.hidden_size, width)
        self.down_proj = nn.Linear(width, c.hidden_size)

    def forward(self, x):
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


class RecurrentGemmaDecoderLayer(nn.Module):
    def __init__(self, c, block_type):
        super().__init__()
        self.temporal_pre_norm = RMSNorm(c.hidden_size, offset=True)
        self.temporal_block = (RecurrentGemmaSdpaAttention(c) if block_type == "attention"
                               else RecurrentGemmaRecurrentBlock(c))
        self.channel_pre_norm = RMSNorm(c.hidden_size, offset=True)
        self.mlp_block = RecurrentGemmaMlp(c)

    def forward(self, activations, position_ids, attention_mask, cache_position=None,
                use_cache=None):
        h = self.temporal_block(self.temporal_pre_norm(activations), position_ids, attention_mask,
                                cache_position=cache_position, use_cache=use_cache)
        residual = h + activations
        return self.mlp_block(self.channel_pre_norm(residual)) + residual


class RecurrentGemmaModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        types = (c.block_types * 100)[:c.num_hidden_layers]
        self.layers = nn.ModuleList(RecurrentGemmaDecoderLayer(c, t) for t in types)
        self.final_norm = RMSNorm(c.hidden_size, offset=True)
        self.normalizer = c.hidden_size ** 0.5

    def forward(self, input_ids):
        h = self.embed_tokens(input_ids) * self.normalizer
        position_ids = torch.arange(input_ids.shape[1]).unsqueeze(0)
        for layer in self.layers:
            h = layer(h, position_ids, None, None, False)
        return self.final_norm(h)


class RecurrentGemmaForCausalLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.config = c
        self.model = RecurrentGemmaModel(c)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)

    def forward(self, input_ids):
        return self.lm_head(self.model(input_ids))


# ---------------------------------------------------------------- configurations

VOCAB = 97


def tiny_llama(seed=1):
    torch.manual_seed(seed)
    c = SimpleNamespace(model_type="llama", hidden_size=32, intermediate_size=48,
                        num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                        vocab_size=VOCAB)
    m = LlamaForCausalLM(c).eval()
    plant_outliers(m.model.embed_tokens, [5, 17], 30.0)
    return m


def tiny_gpt2(seed=2):
    torch.manual_seed(seed)
    c = SimpleNamespace(model_type="gpt2", n_embd=24, hidden_size=24, n_head=4, n_layer=2,
                        n_positions=64, vocab_size=VOCAB)
    m = GPT2LMHeadModel(c).eval()
    plant_outliers(m.transformer.wte, [3], 40.0)
    return m


def tiny_mamba(seed=3):
    torch.manual_seed(seed)
    c = SimpleNamespace(model_type="mamba", hidden_size=16, intermediate_size=32, state_size=4,
                        time_step_rank=2, conv_kernel=4, num_hidden_layers=2, vocab_size=VOCAB)
    m = MambaForCausalLM(c).eval()
    plant_outliers(m.backbone.embeddings, [7], 25.0)
    return m


def tiny_recurrent_gemma(seed=4):
    torch.manual_seed(seed)
    c = SimpleNamespace(model_type="recurrent_gemma", hidden_size=32, intermediate_size=96,
                        num_attention_heads=4, num_key_value_heads=1, head_dim=8, lru_width=32,
                        conv1d_width=4, num_hidden_layers=3,
                        block_types=["recurrent", "recurrent", "attention"], vocab_size=VOCAB)
    m = RecurrentGemmaForCausalLM(c).eval()
    plant_outliers(m.model.embed_tokens, [9], 20.0)
    return m


# ---------------------------------------------------------------- expected points
# (site, module relative to the layer, direction, component, channels, layout),
# written from the catalogue specification.

def llama_expected(c):
    h, i = c.hidden_size, c.intermediate_size
    kv = c.num_key_value_heads * (h // c.num_attention_heads)
    before = [("embed_tokens.out", "model.embed_tokens", "out", "embedding", h, "rows")]
    layer = [
        ("layer.in", "", "in", "layer", h, "rows"),
        ("input_layernorm.in", "input_layernorm", "in", "norm", h, "rows"),
        ("input_layernorm.out", "input_layernorm", "out", "norm", h, "rows"),
        ("self_attn.q_proj.out", "self_attn.q_proj", "out", "attention", h, "rows"),
        ("self_attn.k_proj.out", "self_attn.k_proj", "out", "attention", kv, "rows"),
        ("self_attn.v_proj.out", "self_attn.v_proj", "out", "attention", kv, "rows"),
        ("self_attn.o_proj.in", "self_attn.o_proj", "in", "attention", h, "rows"),
        ("self_attn.o_proj.out", "self_attn.o_proj", "out", "attention", h, "rows"),
        ("post_attention_layernorm.in", "post_attention_layernorm", "in", "norm", h, "rows"),
        ("post_attention_layernorm.out", "post_attention_layernorm", "out", "norm", h, "rows"),
        ("mlp.gate_proj.out", "mlp.gate_proj", "out", "mlp", i, "rows"),
        ("mlp.up_proj.out", "mlp.up_proj", "out", "mlp", i, "rows"),
        ("mlp.down_proj.in", "mlp.down_proj", "in", "mlp", i, "rows"),
        ("mlp.down_proj.out", "mlp.down_proj", "out", "mlp", h, "rows"),
        ("layer.out", "", "out", "layer", h, "rows"),
    ]
    after = [("final_norm.in", "model.norm", "in", "norm", h, "rows"),
             ("final_norm.out", "model.norm", "out", "norm", h, "rows")]
    return "model.layers", before, [layer] * c.num_hidden_layers, after


def gpt2_expected(c):
    h = c.n_embd
    before = [("embed_tokens.out", "transformer.wte", "out", "embedding", h, "rows")]
    layer = [
        ("layer.in", "", "in", "layer", h, "rows"),
        ("ln_1.in", "ln_1", "in", "norm", h, "rows"),
        ("ln_1.out", "ln_1", "out", "norm", h, "rows"),
        ("attn.c_attn.out", "attn.c_attn", "out", "attention", 3 * h, "rows"),
        ("attn.c_proj.in", "attn.c_proj", "in", "attention", h, "rows"),
        ("attn.c_proj.out", "attn.c_proj", "out", "attention", h, "rows"),
        ("ln_2.in", "ln_2", "in", "norm", h, "rows"),
        ("ln_2.out", "ln_2", "out", "norm", h, "rows"),
        ("mlp.c_fc.out", "mlp.c_fc", "out", "mlp", 4 * h, "rows"),
        ("mlp.c_proj.in", "mlp.c_proj", "in", "mlp", 4 * h, "rows"),
        ("mlp.c_proj.out", "mlp.c_proj", "out", "mlp", h, "rows"),
        ("layer.out", "", "out", "layer", h, "rows"),
    ]
    after = [("final_norm.in", "transformer.ln_f", "in", "norm", h, "rows"),
             ("final_norm.out", "transformer.ln_f", "out", "norm", h, "rows")]
    return "transformer.h", before, [layer] * c.n_layer, after


def mamba_expected(c):
    h, i = c.hidden_size, c.intermediate_size
    layer = [
        ("layer.in", "", "in", "layer", h, "rows"),
        ("norm.in", "norm", "in", "norm", h, "rows"),
        ("norm.out", "norm", "out", "norm", h, "rows"),
        ("mixer.in_proj.out", "mixer.in_proj", "out", "ssm", 2 * i, "rows"),
        ("mixer.conv1d.out", "mixer.conv1d", "out", "ssm", i, "conv"),
        ("mixer.x_proj.in", "mixer.x_proj", "in", "ssm", i, "rows"),
        ("mixer.x_proj.out", "mixer.x_proj", "out", "ssm", c.time_step_rank + 2 * c.state_size, "rows"),
        ("mixer.dt_proj.out", "mixer.dt_proj", "out", "ssm", i, "rows"),
        ("mixer.out_proj.in", "mixer.out_proj", "in", "ssm", i, "rows"),
        ("mixer.out_proj.out", "mixer.out_proj", "out", "ssm", h, "rows"),
        ("layer.out", "", "out", "layer", h, "rows"),
    ]
    after = [("final_norm.in", "backbone.norm_f", "in", "norm", h, "rows"),
             ("final_norm.out", "backbone.norm_f", "out", "norm", h, "rows")]
    return "backbone.layers", [], [layer] * c.num_hidden_layers, after


RG_SITE_TYPES = 26


def recurrent_gemma_expected(c):
    h, w, mlp = c.hidden_size, c.lru_width, c.intermediate_size // 2
    kv = c.num_key_value_heads * c.head_dim
    q = c.num_attention_heads * c.head_dim
    head = [("layer.in", "", "in", "layer", h, "rows"),
            ("temporal_pre_norm.in", "temporal_pre_norm", "in", "norm", h, "rows"),
            ("temporal_pre_norm.out", "temporal_pre_norm", "out", "norm", h, "rows")]
    attention = [
        ("attention.in", "temporal_block", "in", "attention", h, "rows"),
        ("attention.q_proj.out", "temporal_block.q_proj", "out", "attention", q, "rows"),
        ("attention.k_proj.out", "temporal_block.k_proj", "out", "attention", kv, "rows"),
        ("attention.v_proj.out", "temporal_block.v_proj", "out", "attention", kv, "rows"),
        ("attention.o_proj.in", "temporal_block.o_proj", "in", "attention", q, "rows"),
        ("attention.out", "temporal_block", "out", "attention", h, "rows"),
    ]
    recurrent = [
        ("recurrent.in", "temporal_block", "in", "recurrent", h, "rows"),
        ("recurrent.linear_y.out", "temporal_block.linear_y", "out", "recurrent", w, "rows"),
        ("recurrent.linear_x.out", "temporal_block.linear_x", "out", "recurrent", w, "rows"),
        ("recurrent.conv1d.out", "temporal_block.conv_1d", "out", "recurrent", w, "conv"),
        ("recurrent.rg_lru.out", "temporal_block.rg_lru", "out", "recurrent", w, "rows"),
        ("recurrent.linear_out.in", "temporal_block.linear_out", "in", "recurrent", w, "rows"),
        ("recurrent.linear_out.out", "temporal_block.linear_out", "out", "recurrent", h, "rows"),
    ]
    tail = [("channel_pre_norm.in", "channel_pre_norm", "in", "norm", h, "rows"),
            ("channel_pre_norm.out", "channel_pre_norm", "out", "norm", h, "rows"),
            ("mlp.in", "mlp_block", "in", "mlp", h, "rows"),
            ("mlp.gate_proj.out", "mlp_block.gate_proj", "out", "mlp", mlp, "rows"),
            ("mlp.up_proj.out", "mlp_block.up_proj", "out", "mlp", mlp, "rows"),
            ("mlp.down_proj.in", "mlp_block.down_proj", "in", "mlp", mlp, "rows"),
            ("mlp.out", "mlp_block", "out", "mlp", h, "rows"),
            ("layer.out", "", "out", "layer", h, "rows")]
    types = (c.block_types * 100)[:c.num_hidden_layers]
    layers = [head + (attention if t == "attention" else recurrent) + tail for t in types]
    after = [("final_norm.in", "model.final_norm", "in", "norm", h, "rows"),
             ("final_norm.out", "model.final_norm", "out", "norm", h, "rows")]
    return "model.layers", [], layers, after


MODELS = {
    "llama": (tiny_llama, llama_expected),
    "gpt2": (tiny_gpt2, gpt2_expected),
    "mamba": (tiny_mamba, mamba_expected),
    "recurrent_gemma": (tiny_recurrent_gemma, recurrent_gemma_expected),
}


def expected_points(model, expected):
    """[(name, layer, component, site, module, direction, channels, layout)]."""
    prefix, before, layers, after = expected(model.config)
    out = []
    for site, module, direction, component, channels, layout in before:
        out.append((site, -1, component, site, module, direction, channels, layout))
    for i, sites in enumerate(layers):
        for site, module, direction, component, channels, layout in sites:
            path = f"{prefix}.{i}" + (f".{module}" if module else "")
            out.append((f"layers.{i}.{site}", i, component, site, path, direction, channels, layout))
    for site, module, direction, component, channels, layout in after:
        out.append((site, -1, component, site, module, direction, channels, layout))
    return out


def module_at(model, path):
    m = model
    for part in path.split(".") if path else ():
        m = getattr(m, part)
    return m


def same_names_as_trace_synth(check):
    """The catalogues name points as trace-synth does for the same
    architecture and depth (everything but the widths, which are tiny here)."""
    import shutil
    import subprocess
    if shutil.which("trace-synth") is None:
        print("# trace-synth not on PATH: names not compared with it")
        return
    for arch, build, layers in (("llama-1b", tiny_llama, 16), ("mamba-130m", tiny_mamba, 24),
                                ("recurrent-gemma-2b", tiny_recurrent_gemma, 26)):
        check.context = f"same names as trace-synth --arch {arch}"
        model = build()
        c = model.config
        deeper = dict(vars(c), num_hidden_layers=layers)
        torch.manual_seed(0)
        model = type(model)(SimpleNamespace(**deeper))
        got = [(p.name, str(p.layer), p.component, p.site, p.direction)
               for p in acttrace.points(model)]
        out = subprocess.run(["trace-synth", "--arch", arch, "--list-points"], check=True,
                             capture_output=True, text=True).stdout.splitlines()
        want = [tuple(line.split("\t")[:5]) for line in out[1:]]
        diff = [(g, w) for g, w in zip(got, want) if g != w]
        check.ok(len(got) == len(want) and not diff,
                 f"{len(got)} points vs {len(want)}; first differences {diff[:3]}")


def main():
    check = Checker()
    for name, (build, expected) in MODELS.items():
        check.context = name
        model = build()
        want = expected_points(model, expected)
        got = [(p.name, p.layer, p.component, p.site, p.module, p.direction, p.channels, p.layout)
               for p in acttrace.points(model)]
        check.ok(got == want, "acttrace.points differs from the specification:\n  " +
                 "\n  ".join(f"got {g}\n  want {w}" for g, w in zip(got + [None] * len(want),
                                                                    want + [None] * len(got))
                             if g != w))
        by_name = {p.name: p for p in acttrace.points(model, name)}
        check.ok(list(by_name) == [w[0] for w in want], f"catalogue '{name}' by name")
        for p in by_name.values():
            check.ok(p.module_class == type(module_at(model, p.module)).__name__,
                     f"{p.name}: module_class {p.module_class}")
            check.ok(p.component in acttrace.COMPONENTS, f"{p.name}: component {p.component}")
        with torch.no_grad():
            logits = model(torch.randint(0, VOCAB, (2, 5)))
        check.ok(logits.shape == (2, 5, VOCAB), f"forward gives {tuple(logits.shape)}")
    same_names_as_trace_synth(check)
    check.context = "recurrent_gemma"
    sites = {p.site for p in acttrace.points(tiny_recurrent_gemma())}
    check.ok(len(sites) == RG_SITE_TYPES, f"{len(sites)} site types, expected {RG_SITE_TYPES}")
    check.context = "mamba, weights-only mixer"
    model = tiny_mamba()
    for layer in model.backbone.layers:
        weights_only = WeightsOnlyMambaMixer(model.config)
        weights_only.load_state_dict(layer.mixer.state_dict())
        layer.mixer = weights_only
    sites = [p.site for p in acttrace.points(model) if p.layer == 0]
    check.ok("mixer.conv1d.out" not in sites and "mixer.dt_proj.out" not in sites and
             "mixer.x_proj.in" in sites, f"sites of a mixer that never calls conv1d: {sites}")
    check.context = "generic"
    generic = acttrace.points(tiny_llama(), "generic")
    linear = [n for n, m in tiny_llama().named_modules() if isinstance(m, nn.Linear)]
    norms = [n for n, m in tiny_llama().named_modules() if isinstance(m, RMSNorm)]
    check.ok(len(generic) == 2 * (len(linear) + len(norms)),
             f"{len(generic)} generic points, expected {2 * (len(linear) + len(norms))}")
    names = {p.name for p in generic}
    check.ok({"layers.0.mlp.up_proj.in", "layers.1.self_attn.o_proj.out", "model.norm.out",
              "lm_head.out"} <= names, f"generic names {sorted(names)[:6]}...")
    comps = {p.name: p.component for p in generic}
    check.ok(comps.get("layers.0.mlp.up_proj.in") == "mlp" and
             comps.get("layers.0.self_attn.q_proj.out") == "attention" and
             comps.get("layers.0.input_layernorm.in") == "norm" and
             comps.get("lm_head.out") == "head", f"generic components {comps}")
    check.done("test_python_models")


if __name__ == "__main__":
    main()
