/* synth-arch.c: recording-point tables of the architectures trace-synth imitates.
 * Widths follow the Hugging Face configurations; RecurrentGemma-2B's 26 site
 * types and their totals are those of the outlier study's Table 4.1. */
#include <stdio.h>
#include <string.h>

#include "synth-arch.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))
#define ROWS SYNTH_ROWS
#define CONV SYNTH_CONV
#define ANY SYNTH_ANY
#define ATT SYNTH_ATTENTION
#define REC SYNTH_RECURRENT

/* ---------------------------------------------------------------- recurrent-gemma-2b
 * 26 layers: recurrent, recurrent, attention, ... (attention at 2, 5, ..., 23);
 * hidden 2560, MLP 7680, 10 query heads x 256, one KV head of 256, LRU width
 * 2560.  Per component over the model (Table 4.1): MLP 26 x 28160 = 732,160;
 * recurrent 18 x 17920 = 322,560; norm 26 x 10240 + 5120 = 271,360; layer
 * boundary 26 x 5120 = 133,120; attention 8 x 10752 = 86,016. */
static const struct synth_site rg_layer[] = {
	{ANY, "layer", "layer.in", "", "RecurrentGemmaDecoderLayer", "in", 2560, ROWS},
	{ANY, "norm", "temporal_pre_norm.in", "temporal_pre_norm", "RecurrentGemmaRMSNorm", "in", 2560, ROWS},
	{ANY, "norm", "temporal_pre_norm.out", "temporal_pre_norm", "RecurrentGemmaRMSNorm", "out", 2560, ROWS},
	{ATT, "attention", "attention.in", "temporal_block", "RecurrentGemmaSdpaAttention", "in", 2560, ROWS},
	{ATT, "attention", "attention.q_proj.out", "temporal_block.q_proj", "Linear", "out", 2560, ROWS},
	{ATT, "attention", "attention.k_proj.out", "temporal_block.k_proj", "Linear", "out", 256, ROWS},
	{ATT, "attention", "attention.v_proj.out", "temporal_block.v_proj", "Linear", "out", 256, ROWS},
	{ATT, "attention", "attention.o_proj.in", "temporal_block.o_proj", "Linear", "in", 2560, ROWS},
	{ATT, "attention", "attention.out", "temporal_block", "RecurrentGemmaSdpaAttention", "out", 2560, ROWS},
	{REC, "recurrent", "recurrent.in", "temporal_block", "RecurrentGemmaRecurrentBlock", "in", 2560, ROWS},
	{REC, "recurrent", "recurrent.linear_y.out", "temporal_block.linear_y", "Linear", "out", 2560, ROWS},
	{REC, "recurrent", "recurrent.linear_x.out", "temporal_block.linear_x", "Linear", "out", 2560, ROWS},
	{REC, "recurrent", "recurrent.conv1d.out", "temporal_block.conv_1d", "Conv1d", "out", 2560, CONV},
	{REC, "recurrent", "recurrent.rg_lru.out", "temporal_block.rg_lru", "RecurrentGemmaRglru", "out", 2560, ROWS},
	{REC, "recurrent", "recurrent.linear_out.in", "temporal_block.linear_out", "Linear", "in", 2560, ROWS},
	{REC, "recurrent", "recurrent.linear_out.out", "temporal_block.linear_out", "Linear", "out", 2560, ROWS},
	{ANY, "norm", "channel_pre_norm.in", "channel_pre_norm", "RecurrentGemmaRMSNorm", "in", 2560, ROWS},
	{ANY, "norm", "channel_pre_norm.out", "channel_pre_norm", "RecurrentGemmaRMSNorm", "out", 2560, ROWS},
	{ANY, "mlp", "mlp.in", "mlp_block", "RecurrentGemmaMlp", "in", 2560, ROWS},
	{ANY, "mlp", "mlp.gate_proj.out", "mlp_block.gate_proj", "Linear", "out", 7680, ROWS},
	{ANY, "mlp", "mlp.up_proj.out", "mlp_block.up_proj", "Linear", "out", 7680, ROWS},
	{ANY, "mlp", "mlp.down_proj.in", "mlp_block.down_proj", "Linear", "in", 7680, ROWS},
	{ANY, "mlp", "mlp.out", "mlp_block", "RecurrentGemmaMlp", "out", 2560, ROWS},
	{ANY, "layer", "layer.out", "", "RecurrentGemmaDecoderLayer", "out", 2560, ROWS},
};
static const struct synth_site rg_after[] = {
	{ANY, "norm", "final_norm.in", "model.final_norm", "RecurrentGemmaRMSNorm", "in", 2560, ROWS},
	{ANY, "norm", "final_norm.out", "model.final_norm", "RecurrentGemmaRMSNorm", "out", 2560, ROWS},
};

/* ---------------------------------------------------------------- llama-1b
 * Llama 3.2 1B: 16 layers, hidden 2048, intermediate 8192, 32 query heads x 64,
 * 8 KV heads x 64. */
static const struct synth_site llama1b_before[] = {
	{ANY, "embedding", "embed_tokens.out", "model.embed_tokens", "Embedding", "out", 2048, ROWS},
};
static const struct synth_site llama1b_layer[] = {
	{ANY, "layer", "layer.in", "", "LlamaDecoderLayer", "in", 2048, ROWS},
	{ANY, "norm", "input_layernorm.in", "input_layernorm", "LlamaRMSNorm", "in", 2048, ROWS},
	{ANY, "norm", "input_layernorm.out", "input_layernorm", "LlamaRMSNorm", "out", 2048, ROWS},
	{ANY, "attention", "self_attn.q_proj.out", "self_attn.q_proj", "Linear", "out", 2048, ROWS},
	{ANY, "attention", "self_attn.k_proj.out", "self_attn.k_proj", "Linear", "out", 512, ROWS},
	{ANY, "attention", "self_attn.v_proj.out", "self_attn.v_proj", "Linear", "out", 512, ROWS},
	{ANY, "attention", "self_attn.o_proj.in", "self_attn.o_proj", "Linear", "in", 2048, ROWS},
	{ANY, "attention", "self_attn.o_proj.out", "self_attn.o_proj", "Linear", "out", 2048, ROWS},
	{ANY, "norm", "post_attention_layernorm.in", "post_attention_layernorm", "LlamaRMSNorm", "in", 2048, ROWS},
	{ANY, "norm", "post_attention_layernorm.out", "post_attention_layernorm", "LlamaRMSNorm", "out", 2048, ROWS},
	{ANY, "mlp", "mlp.gate_proj.out", "mlp.gate_proj", "Linear", "out", 8192, ROWS},
	{ANY, "mlp", "mlp.up_proj.out", "mlp.up_proj", "Linear", "out", 8192, ROWS},
	{ANY, "mlp", "mlp.down_proj.in", "mlp.down_proj", "Linear", "in", 8192, ROWS},
	{ANY, "mlp", "mlp.down_proj.out", "mlp.down_proj", "Linear", "out", 2048, ROWS},
	{ANY, "layer", "layer.out", "", "LlamaDecoderLayer", "out", 2048, ROWS},
};
static const struct synth_site llama1b_after[] = {
	{ANY, "norm", "final_norm.in", "model.norm", "LlamaRMSNorm", "in", 2048, ROWS},
	{ANY, "norm", "final_norm.out", "model.norm", "LlamaRMSNorm", "out", 2048, ROWS},
};

/* ---------------------------------------------------------------- tiny
 * Two Llama-style layers, small enough for tests. */
static const struct synth_site tiny_before[] = {
	{ANY, "embedding", "embed_tokens.out", "model.embed_tokens", "Embedding", "out", 64, ROWS},
};
static const struct synth_site tiny_layer[] = {
	{ANY, "layer", "layer.in", "", "LlamaDecoderLayer", "in", 64, ROWS},
	{ANY, "norm", "input_layernorm.in", "input_layernorm", "LlamaRMSNorm", "in", 64, ROWS},
	{ANY, "norm", "input_layernorm.out", "input_layernorm", "LlamaRMSNorm", "out", 64, ROWS},
	{ANY, "attention", "self_attn.q_proj.out", "self_attn.q_proj", "Linear", "out", 64, ROWS},
	{ANY, "attention", "self_attn.k_proj.out", "self_attn.k_proj", "Linear", "out", 32, ROWS},
	{ANY, "attention", "self_attn.v_proj.out", "self_attn.v_proj", "Linear", "out", 32, ROWS},
	{ANY, "attention", "self_attn.o_proj.in", "self_attn.o_proj", "Linear", "in", 64, ROWS},
	{ANY, "attention", "self_attn.o_proj.out", "self_attn.o_proj", "Linear", "out", 64, ROWS},
	{ANY, "norm", "post_attention_layernorm.in", "post_attention_layernorm", "LlamaRMSNorm", "in", 64, ROWS},
	{ANY, "norm", "post_attention_layernorm.out", "post_attention_layernorm", "LlamaRMSNorm", "out", 64, ROWS},
	{ANY, "mlp", "mlp.gate_proj.out", "mlp.gate_proj", "Linear", "out", 128, ROWS},
	{ANY, "mlp", "mlp.up_proj.out", "mlp.up_proj", "Linear", "out", 128, ROWS},
	{ANY, "mlp", "mlp.down_proj.in", "mlp.down_proj", "Linear", "in", 128, ROWS},
	{ANY, "mlp", "mlp.down_proj.out", "mlp.down_proj", "Linear", "out", 64, ROWS},
	{ANY, "layer", "layer.out", "", "LlamaDecoderLayer", "out", 64, ROWS},
};
static const struct synth_site tiny_after[] = {
	{ANY, "norm", "final_norm.in", "model.norm", "LlamaRMSNorm", "in", 64, ROWS},
	{ANY, "norm", "final_norm.out", "model.norm", "LlamaRMSNorm", "out", 64, ROWS},
};

/* ---------------------------------------------------------------- mamba-130m
 * 24 layers, d_model 768, d_inner 1536, dt_rank 48, d_state 16:
 * in_proj 768 -> 2 x 1536, x_proj 1536 -> 48 + 2 x 16 = 80, dt_proj 48 -> 1536. */
static const struct synth_site mamba130m_layer[] = {
	{ANY, "layer", "layer.in", "", "MambaBlock", "in", 768, ROWS},
	{ANY, "norm", "norm.in", "norm", "MambaRMSNorm", "in", 768, ROWS},
	{ANY, "norm", "norm.out", "norm", "MambaRMSNorm", "out", 768, ROWS},
	{ANY, "ssm", "mixer.in_proj.out", "mixer.in_proj", "Linear", "out", 3072, ROWS},
	{ANY, "ssm", "mixer.conv1d.out", "mixer.conv1d", "Conv1d", "out", 1536, CONV},
	{ANY, "ssm", "mixer.x_proj.in", "mixer.x_proj", "Linear", "in", 1536, ROWS},
	{ANY, "ssm", "mixer.x_proj.out", "mixer.x_proj", "Linear", "out", 80, ROWS},
	{ANY, "ssm", "mixer.dt_proj.out", "mixer.dt_proj", "Linear", "out", 1536, ROWS},
	{ANY, "ssm", "mixer.out_proj.in", "mixer.out_proj", "Linear", "in", 1536, ROWS},
	{ANY, "ssm", "mixer.out_proj.out", "mixer.out_proj", "Linear", "out", 768, ROWS},
	{ANY, "layer", "layer.out", "", "MambaBlock", "out", 768, ROWS},
};
static const struct synth_site mamba130m_after[] = {
	{ANY, "norm", "final_norm.in", "backbone.norm_f", "MambaRMSNorm", "in", 768, ROWS},
	{ANY, "norm", "final_norm.out", "backbone.norm_f", "MambaRMSNorm", "out", 768, ROWS},
};

static const struct synth_arch archs[] = {
	{"tiny", "synthetic tiny (2-layer Llama-style)", "model.layers.", 2, 64, 256, 0,
	 tiny_before, N_OF(tiny_before), tiny_layer, N_OF(tiny_layer), tiny_after, N_OF(tiny_after)},
	{"llama-1b", "synthetic meta-llama/Llama-3.2-1B", "model.layers.", 16, 2048, 128256, 0,
	 llama1b_before, N_OF(llama1b_before), llama1b_layer, N_OF(llama1b_layer), llama1b_after,
	 N_OF(llama1b_after)},
	{"mamba-130m", "synthetic state-spaces/mamba-130m-hf", "backbone.layers.", 24, 768, 50280, 0,
	 NULL, 0, mamba130m_layer, N_OF(mamba130m_layer), mamba130m_after, N_OF(mamba130m_after)},
	{"recurrent-gemma-2b", "synthetic google/recurrentgemma-2b", "model.layers.", 26, 2560, 256000, 3,
	 NULL, 0, rg_layer, N_OF(rg_layer), rg_after, N_OF(rg_after)},
};

const struct synth_arch *synth_arch_find(const char *name)
{
	for (size_t i = 0; i < N_OF(archs); i++)
		if (strcmp(archs[i].name, name) == 0)
			return &archs[i];
	return NULL;
}

const char *synth_arch_names(void)
{
	return "tiny, llama-1b, mamba-130m, recurrent-gemma-2b";
}

enum synth_block synth_arch_block(const struct synth_arch *a, int32_t layer)
{
	if (a->attention_every <= 0)
		return SYNTH_ANY;
	return layer % a->attention_every == a->attention_every - 1 ? SYNTH_ATTENTION
	                                                            : SYNTH_RECURRENT;
}

static int site_in_layer(const struct synth_arch *a, const struct synth_site *s, int32_t layer)
{
	return s->block == SYNTH_ANY || s->block == synth_arch_block(a, layer);
}

size_t synth_arch_count_points(const struct synth_arch *a)
{
	size_t n = a->n_before + a->n_after;
	for (int32_t l = 0; l < a->layers; l++)
		for (size_t i = 0; i < a->n_per_layer; i++)
			n += (size_t)site_in_layer(a, &a->per_layer[i], l);
	return n;
}

static void outside_point(struct synth_point *p, const struct synth_site *s, int32_t depth)
{
	snprintf(p->name, sizeof p->name, "%s", s->site);
	snprintf(p->module, sizeof p->module, "%s", s->module);
	p->layer = -1;
	p->depth = depth;
	p->site = s;
}

void synth_arch_points(const struct synth_arch *a, struct synth_point *points)
{
	size_t n = 0;
	for (size_t i = 0; i < a->n_before; i++)
		outside_point(&points[n++], &a->before[i], 0);
	for (int32_t l = 0; l < a->layers; l++) {
		for (size_t i = 0; i < a->n_per_layer; i++) {
			const struct synth_site *s = &a->per_layer[i];
			if (!site_in_layer(a, s, l))
				continue;
			struct synth_point *p = &points[n++];
			snprintf(p->name, sizeof p->name, "layers.%d.%s", (int)l, s->site);
			if (s->module[0])
				snprintf(p->module, sizeof p->module, "%s%d.%s", a->layer_prefix, (int)l,
				         s->module);
			else
				snprintf(p->module, sizeof p->module, "%s%d", a->layer_prefix, (int)l);
			p->layer = l;
			p->depth = l;
			p->site = s;
		}
	}
	for (size_t i = 0; i < a->n_after; i++)
		outside_point(&points[n++], &a->after[i], a->layers - 1);
}
