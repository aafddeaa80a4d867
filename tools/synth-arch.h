/* synth-arch.h: the model architectures trace-synth imitates, as data: which
 * recording points each layer has, how wide they are and how they are laid out. */
#ifndef AT_SYNTH_ARCH_H
#define AT_SYNTH_ARCH_H

#include <stddef.h>
#include <stdint.h>

/* How a point's activations arrive: rows of channels ([B, T, C], the usual
 * Linear or norm output), or channels first ([B, C, T], a Conv1d output). */
enum synth_layout { SYNTH_ROWS = 0, SYNTH_CONV = 1 };

/* The kind of block a layer is; hybrid models alternate. */
enum synth_block { SYNTH_ANY = 0, SYNTH_ATTENTION = 1, SYNTH_RECURRENT = 2 };

/* One recording point type, as it appears in the tables. */
struct synth_site {
	enum synth_block block;   /* which layers have it (SYNTH_ANY: every layer) */
	const char *component;    /* mlp|attention|recurrent|ssm|norm|layer|embedding */
	const char *site;         /* e.g. "mlp.up_proj.out"; the point name without "layers.N." */
	const char *module;       /* module path below the layer ("" for the layer itself), or
	                             the full path for points outside the layer stack */
	const char *module_class;
	const char *direction;    /* "in" or "out" */
	int64_t channels;
	enum synth_layout layout;
};

struct synth_arch {
	const char *name;         /* --arch value */
	const char *model;        /* what the trace's model attribute says */
	const char *layer_prefix; /* module path of layer N is layer_prefix + N */
	int32_t layers;
	int64_t hidden;           /* residual stream width */
	int32_t vocab;            /* for the synthetic token ids */
	/* layer l is an attention layer when attention_every > 0 and
	 * l % attention_every == attention_every - 1, else a recurrent one
	 * (attention_every == 0: no block distinction) */
	int32_t attention_every;
	const struct synth_site *before; /* points before the stack (layer -1) */
	size_t n_before;
	const struct synth_site *per_layer;
	size_t n_per_layer;
	const struct synth_site *after;  /* points after the stack (layer -1) */
	size_t n_after;
};

/* A recording point of one model, as the writer wants it. */
struct synth_point {
	char name[128];           /* "layers.3.mlp.up_proj.out", "final_norm.in" */
	char module[160];         /* "model.layers.3.mlp.up_proj" */
	int32_t layer;            /* -1 outside the layer stack */
	int32_t depth;            /* position in the stack for planting: the layer, 0 before
	                             the stack, layers-1 after it */
	const struct synth_site *site;
};

/* The architecture called name, or NULL. */
const struct synth_arch *synth_arch_find(const char *name);
/* "tiny, llama-1b, ..." for messages. */
const char *synth_arch_names(void);
/* Number of recording points of the model. */
size_t synth_arch_count_points(const struct synth_arch *a);
/* Fill points[0 .. synth_arch_count_points(a)) in model order: points before
 * the stack, layer 0's sites in table order, ..., points after the stack. */
void synth_arch_points(const struct synth_arch *a, struct synth_point *points);
/* Block kind of layer l. */
enum synth_block synth_arch_block(const struct synth_arch *a, int32_t layer);

#endif /* AT_SYNTH_ARCH_H */
