/* breakdown.c: outlier counts of recording points summed by component, layer,
 * site and layer group, as the RecurrentGemma study's Table 4.1 (components),
 * Figure 4.1 (layers) and Table 4.2 (layer groups) report them. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis-internal.h"

static const char *point_name(const struct an_point_count *p)
{
	return p->point ? p->point : "(unnamed)";
}

/* Counts that cannot be right make every table built on them wrong: refuse them. */
static int check_points(const struct an_point_count *points, int64_t n, enum an_breakdown by,
                        struct at_error *err)
{
	if (n < 0 || (n > 0 && !points))
		return an_fail(err, AT_EINVAL, "breakdown: no points given");
	for (int64_t i = 0; i < n; i++) {
		const struct an_point_count *p = &points[i];
		if (p->channels < 0 || p->outliers < 0 || p->outliers > p->channels)
			return an_fail(err, AT_EINVAL, "breakdown: point %s: %lld outliers among %lld channels",
			                 point_name(p), (long long)p->outliers, (long long)p->channels);
		const char *key = by == AN_BY_COMPONENT ? p->component : by == AN_BY_SITE ? p->site : "";
		if (!key)
			return an_fail(err, AT_EINVAL, "breakdown: point %s has no %s", point_name(p),
			                 by == AN_BY_COMPONENT ? "component" : "site");
		if (strlen(key) >= sizeof ((struct an_row *)0)->key)
			return an_fail(err, AT_EINVAL, "breakdown: point %s: %s too long", point_name(p),
			                 by == AN_BY_COMPONENT ? "component" : "site");
	}
	return AT_OK;
}

/* Layers below 0 mean "no layer" and sort after every layer. */
static int64_t layer_rank(int32_t layer)
{
	return layer < 0 ? INT64_MAX : layer;
}

static int cmp_layer(const struct an_point_count *a, const struct an_point_count *b)
{
	int64_t x = layer_rank(a->layer), y = layer_rank(b->layer);
	return (x > y) - (x < y);
}

static int cmp_component(const void *pa, const void *pb)
{
	const struct an_point_count *a = *(const struct an_point_count *const *)pa;
	const struct an_point_count *b = *(const struct an_point_count *const *)pb;
	int c = strcmp(a->component, b->component);
	return c ? c : cmp_layer(a, b);
}

static int cmp_site(const void *pa, const void *pb)
{
	const struct an_point_count *a = *(const struct an_point_count *const *)pa;
	const struct an_point_count *b = *(const struct an_point_count *const *)pb;
	int c = strcmp(a->site, b->site);
	return c ? c : cmp_layer(a, b);
}

static int cmp_by_layer(const void *pa, const void *pb)
{
	return cmp_layer(*(const struct an_point_count *const *)pa,
	                 *(const struct an_point_count *const *)pb);
}

static int same_group(const struct an_point_count *a, const struct an_point_count *b,
                      enum an_breakdown by)
{
	switch (by) {
	case AN_BY_COMPONENT: return strcmp(a->component, b->component) == 0;
	case AN_BY_SITE: return strcmp(a->site, b->site) == 0;
	default: return layer_rank(a->layer) == layer_rank(b->layer);
	}
}

static void set_key(struct an_row *row, const struct an_point_count *p, enum an_breakdown by)
{
	if (by == AN_BY_COMPONENT)
		snprintf(row->key, sizeof row->key, "%s", p->component);
	else if (by == AN_BY_SITE)
		snprintf(row->key, sizeof row->key, "%s", p->site);
	else if (p->layer < 0)
		snprintf(row->key, sizeof row->key, "none");
	else
		snprintf(row->key, sizeof row->key, "%d", (int)p->layer);
}

/* Table 4.1 lists components by their total channels, largest first. */
static int cmp_rows_by_channels(const void *pa, const void *pb)
{
	const struct an_row *a = pa, *b = pb;
	if (a->channels != b->channels)
		return a->channels > b->channels ? -1 : 1;
	return strcmp(a->key, b->key);
}

static double ratio(double num, double den)
{
	return den > 0 ? num / den : 0;
}

static void finish_rows(struct an_row *rows, int64_t nrows, int64_t all_outliers)
{
	for (int64_t i = 0; i < nrows; i++) {
		struct an_row *row = &rows[i];
		row->pct_of_group = 100 * ratio((double)row->outliers, (double)row->channels);
		row->pct_of_outliers = 100 * ratio((double)row->outliers, (double)all_outliers);
		row->avg_per_layer = ratio((double)row->outliers, (double)row->layers);
	}
}

static int add_counts(struct an_row *row, const struct an_point_count *p, struct at_error *err)
{
	if (row->channels > INT64_MAX - p->channels)
		return an_fail(err, AT_ERANGE, "breakdown: more than 2^63 channels");
	row->channels += p->channels;
	row->outliers += p->outliers;
	return AT_OK;
}

/* Distinct layers >= 0 among the first n entries of layers (sorted here). */
static int cmp_int32(const void *pa, const void *pb)
{
	int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
	return (a > b) - (a < b);
}

static int64_t count_distinct_layers(int32_t *layers, int64_t n)
{
	qsort(layers, (size_t)n, sizeof *layers, cmp_int32);
	int64_t distinct = 0;
	for (int64_t i = 0; i < n; i++)
		if (layers[i] >= 0 && (i == 0 || layers[i] != layers[i - 1]))
			distinct++;
	return distinct;
}

static int total_row(const struct an_point_count *points, int64_t n, struct an_row *row,
                     struct at_error *err)
{
	memset(row, 0, sizeof *row);
	snprintf(row->key, sizeof row->key, "total");
	int32_t *layers = malloc((size_t)(n ? n : 1) * sizeof *layers);
	if (!layers)
		return an_fail(err, AT_ENOMEM, "breakdown: out of memory");
	for (int64_t i = 0; i < n; i++) {
		int rc = add_counts(row, &points[i], err);
		if (rc) {
			free(layers);
			return rc;
		}
		layers[i] = points[i].layer;
	}
	row->layers = count_distinct_layers(layers, n);
	free(layers);
	return AT_OK;
}

/* Sorted by (group key, layer), a group's members are adjacent and its
 * distinct layers are the changes of layer within the run. */
static int group_sorted(const struct an_point_count *const *sorted, int64_t n, enum an_breakdown by,
                        struct an_row *rows, int64_t *nrows, struct at_error *err)
{
	int64_t count = 0;
	for (int64_t i = 0; i < n; i++) {
		const struct an_point_count *p = sorted[i];
		int new_group = i == 0 || !same_group(sorted[i - 1], p, by);
		if (new_group) {
			memset(&rows[count], 0, sizeof rows[count]);
			set_key(&rows[count], p, by);
			count++;
		}
		struct an_row *row = &rows[count - 1];
		int rc = add_counts(row, p, err);
		if (rc)
			return rc;
		if (p->layer >= 0 && (new_group || sorted[i - 1]->layer != p->layer))
			row->layers++;
	}
	*nrows = count;
	return AT_OK;
}

int an_breakdown(const struct an_point_count *points, int64_t n, enum an_breakdown by,
                 struct an_row **rows, int64_t *nrows, struct at_error *err)
{
	*rows = NULL;
	*nrows = 0;
	if (by != AN_BY_COMPONENT && by != AN_BY_LAYER && by != AN_BY_SITE)
		return an_fail(err, AT_EINVAL, "breakdown: unknown kind %d", (int)by);
	int rc = check_points(points, n, by, err);
	if (rc)
		return rc;
	const struct an_point_count **sorted = malloc((size_t)(n ? n : 1) * sizeof *sorted);
	struct an_row *out = calloc((size_t)n + 1, sizeof *out);
	if (!sorted || !out) {
		free(sorted);
		free(out);
		return an_fail(err, AT_ENOMEM, "breakdown: out of memory");
	}
	for (int64_t i = 0; i < n; i++)
		sorted[i] = &points[i];
	qsort(sorted, (size_t)n, sizeof *sorted,
	      by == AN_BY_COMPONENT ? cmp_component : by == AN_BY_SITE ? cmp_site : cmp_by_layer);
	int64_t count = 0;
	rc = group_sorted(sorted, n, by, out, &count, err);
	free(sorted);
	if (!rc)
		rc = total_row(points, n, &out[count], err);
	if (rc) {
		free(out);
		return rc;
	}
	if (by == AN_BY_COMPONENT)
		qsort(out, (size_t)count, sizeof *out, cmp_rows_by_channels);
	finish_rows(out, count + 1, out[count].outliers);
	*rows = out;
	*nrows = count + 1;
	return AT_OK;
}

/* ---------------------------------------------------------------- layer groups */

/* A layer number: decimal digits only (no sign, no blanks), at most INT32_MAX. */
static const char *parse_layer(const char *s, int32_t *out)
{
	if (*s < '0' || *s > '9')
		return NULL;
	int64_t v = 0;
	for (; *s >= '0' && *s <= '9'; s++) {
		v = 10 * v + (*s - '0');
		if (v > INT32_MAX)
			return NULL;
	}
	*out = (int32_t)v;
	return s;
}

static void group_name(const struct an_group *g, char *buf, size_t size)
{
	if (g->first == g->last)
		snprintf(buf, size, "%d", (int)g->first);
	else
		snprintf(buf, size, "%d-%d", (int)g->first, (int)g->last);
}

/* Groups must ascend without overlapping: each starts after the last ends.
 * spec (may be NULL) is quoted in the message. */
static int check_group_order(const struct an_group *groups, int ngroups, const char *spec,
                             struct at_error *err)
{
	char where[160];
	if (spec)
		snprintf(where, sizeof where, "layer groups '%.100s'", spec);
	else
		snprintf(where, sizeof where, "layer groups");
	for (int i = 0; i < ngroups; i++) {
		char this[32], prev[32];
		if (groups[i].first < 0 || groups[i].first > groups[i].last)
			return an_fail(err, AT_EINVAL, "%s: range %d-%d runs backwards", where,
			                 (int)groups[i].first, (int)groups[i].last);
		if (i == 0 || groups[i].first > groups[i - 1].last)
			continue;
		group_name(&groups[i], this, sizeof this);
		group_name(&groups[i - 1], prev, sizeof prev);
		return an_fail(err, AT_EINVAL, "%s: %s %s %s (groups must ascend without overlapping)",
		                 where, this,
		                 groups[i].last >= groups[i - 1].first ? "overlaps" : "comes before", prev);
	}
	return AT_OK;
}

int an_parse_groups(const char *spec, struct an_group **groups, int *ngroups,
                    struct at_error *err)
{
	*groups = NULL;
	*ngroups = 0;
	if (!spec || !*spec)
		return an_fail(err, AT_EINVAL, "layer groups: empty list (expected e.g. 0-8,9-17,18-25)");
	size_t count = 1;
	for (const char *s = spec; *s; s++)
		count += *s == ',';
	if (count > INT32_MAX)
		return an_fail(err, AT_EINVAL, "layer groups: too many groups");
	struct an_group *out = malloc(count * sizeof *out);
	if (!out)
		return an_fail(err, AT_ENOMEM, "layer groups: out of memory");
	const char *item = spec;
	for (size_t i = 0; i < count; i++) {
		size_t len = strcspn(item, ",");
		const char *end = parse_layer(item, &out[i].first);
		out[i].last = out[i].first;
		if (end && *end == '-')
			end = parse_layer(end + 1, &out[i].last);
		if (!end || end != item + len) {
			free(out);
			return an_fail(err, AT_EINVAL,
			                 "layer groups '%.100s': '%.*s' is not a layer N or a range A-B", spec,
			                 (int)(len < 64 ? len : 64), item);
		}
		item += len + 1;
	}
	int rc = check_group_order(out, (int)count, spec, err);
	if (rc) {
		free(out);
		return rc;
	}
	*groups = out;
	*ngroups = (int)count;
	return AT_OK;
}

int an_breakdown_groups(const struct an_point_count *points, int64_t n,
                        const struct an_group *groups, int ngroups, struct an_row **rows,
                        int64_t *nrows, struct at_error *err)
{
	*rows = NULL;
	*nrows = 0;
	if (ngroups <= 0 || !groups)
		return an_fail(err, AT_EINVAL, "layer groups: no group given");
	int rc = check_points(points, n, AN_BY_LAYER, err);
	if (!rc)
		rc = check_group_order(groups, ngroups, NULL, err);
	if (rc)
		return rc;
	const struct an_point_count **sorted = malloc((size_t)(n ? n : 1) * sizeof *sorted);
	struct an_row *out = calloc((size_t)ngroups + 1, sizeof *out);
	if (!sorted || !out) {
		free(sorted);
		free(out);
		return an_fail(err, AT_ENOMEM, "layer groups: out of memory");
	}
	int64_t all_outliers = 0;
	for (int64_t i = 0; i < n; i++) {
		sorted[i] = &points[i];
		all_outliers += points[i].outliers;
	}
	qsort(sorted, (size_t)n, sizeof *sorted, cmp_by_layer);
	/* Both the points (by layer, none last) and the groups ascend: one pass. */
	struct an_row *total = &out[ngroups];
	snprintf(total->key, sizeof total->key, "total");
	int64_t i = 0;
	for (int g = 0; g < ngroups && !rc; g++) {
		struct an_row *row = &out[g];
		group_name(&groups[g], row->key, sizeof row->key);
		while (i < n && sorted[i]->layer >= 0 && sorted[i]->layer < groups[g].first)
			i++;
		for (; i < n && sorted[i]->layer >= 0 && sorted[i]->layer <= groups[g].last && !rc; i++) {
			rc = add_counts(row, sorted[i], err);
			if (i == 0 || sorted[i - 1]->layer != sorted[i]->layer)
				row->layers++;
		}
		if (!rc)
			rc = add_counts(total, &(struct an_point_count){.channels = row->channels,
			                                                 .outliers = row->outliers},
			                err);
		total->layers += row->layers;
	}
	free(sorted);
	if (rc) {
		free(out);
		return rc;
	}
	finish_rows(out, ngroups + 1, all_outliers);
	*rows = out;
	*nrows = ngroups + 1;
	return AT_OK;
}
