/* test-breakdown.c: analysis/breakdown.c on hand-built point counts with
 * known answers, and on the RecurrentGemma study's Tables 4.1 and 4.2. */
#include "config.h"

#include <string.h>

#include "analysis.h"
#include "tap.h"

#define N_OF(a) ((int64_t)(sizeof(a) / sizeof((a)[0])))

/* The paper's tables print rounded numbers: equal up to their last digit. */
#define TAP_ROUNDS_TO(got, printed, half_ulp, what)                                     \
	TAP_OK(fabs((got) - (printed)) <= (half_ulp), "%s: got %.17g, printed %g", (what), \
	       (double)(got), (double)(printed))

/* Eight points over layers 0-2 plus one of no layer; attention and recurrent
 * tie on channels (60), so their order is the name's. */
static const struct an_point_count mixed[] = {
	{"layers.0.mlp.out", 0, "mlp", "mlp.out", 100, 5},
	{"layers.0.attention.out", 0, "attention", "attention.out", 50, 0},
	{"layers.1.mlp.out", 1, "mlp", "mlp.out", 100, 10},
	{"layers.1.recurrent.out", 1, "recurrent", "recurrent.out", 60, 3},
	{"layers.1.mlp.up_proj.out", 1, "mlp", "mlp.up_proj.out", 300, 2},
	{"final_norm.out", -1, "norm", "final_norm.out", 50, 5},
	{"layers.2.mlp.out", 2, "mlp", "mlp.out", 100, 0},
	{"layers.2.attention.out", 2, "attention", "attention.out", 10, 0},
};

struct want {
	const char *key;
	int64_t channels, outliers, layers;
};

static void check_rows(const char *what, const struct an_row *rows, int64_t nrows,
                       const struct want *want, int64_t nwant, int64_t all_outliers)
{
	TAP_OK(nrows == nwant, "%s: %lld rows (want %lld)", what, (long long)nrows, (long long)nwant);
	for (int64_t i = 0; i < nrows && i < nwant; i++) {
		const struct an_row *r = &rows[i];
		const struct want *w = &want[i];
		TAP_OK(strcmp(r->key, w->key) == 0 && r->channels == w->channels &&
		               r->outliers == w->outliers && r->layers == w->layers,
		       "%s row %lld: %s %lld %lld %lld (want %s %lld %lld %lld)", what, (long long)i,
		       r->key, (long long)r->channels, (long long)r->outliers, (long long)r->layers,
		       w->key, (long long)w->channels, (long long)w->outliers, (long long)w->layers);
		double pct = w->channels ? 100.0 * (double)w->outliers / (double)w->channels : 0;
		double share = all_outliers ? 100.0 * (double)w->outliers / (double)all_outliers : 0;
		double avg = w->layers ? (double)w->outliers / (double)w->layers : 0;
		TAP_CLOSE(r->pct_of_group, pct, 1e-12, 1e-12, "pct_of_group");
		TAP_CLOSE(r->pct_of_outliers, share, 1e-12, 1e-12, "pct_of_outliers");
		TAP_CLOSE(r->avg_per_layer, avg, 1e-12, 1e-12, "avg_per_layer");
	}
}

static void test_by(enum an_breakdown by, const char *what, const struct want *want, int64_t nwant)
{
	struct an_row *rows;
	int64_t nrows;
	struct at_error err = {0};
	int rc = an_breakdown(mixed, N_OF(mixed), by, &rows, &nrows, &err);
	TAP_OK(rc == AT_OK, "%s: %s", what, err.message);
	if (rc)
		return;
	check_rows(what, rows, nrows, want, nwant, 25);
	free(rows);
}

static void test_breakdowns(void)
{
	static const struct want by_component[] = {
		{"mlp", 600, 17, 3},     {"attention", 60, 0, 2}, {"recurrent", 60, 3, 1},
		{"norm", 50, 5, 0},      {"total", 770, 25, 3},
	};
	static const struct want by_layer[] = {
		{"0", 150, 5, 1}, {"1", 460, 15, 1}, {"2", 110, 0, 1}, {"none", 50, 5, 0},
		{"total", 770, 25, 3},
	};
	static const struct want by_site[] = {
		{"attention.out", 60, 0, 2},   {"final_norm.out", 50, 5, 0}, {"mlp.out", 300, 15, 3},
		{"mlp.up_proj.out", 300, 2, 1}, {"recurrent.out", 60, 3, 1}, {"total", 770, 25, 3},
	};
	test_by(AN_BY_COMPONENT, "by component", by_component, N_OF(by_component));
	test_by(AN_BY_LAYER, "by layer", by_layer, N_OF(by_layer));
	test_by(AN_BY_SITE, "by site", by_site, N_OF(by_site));
}

/* No outliers anywhere, and no points at all: ratios are 0, not NaN. */
static void test_empty(void)
{
	struct an_point_count quiet[N_OF(mixed)];
	memcpy(quiet, mixed, sizeof quiet);
	for (int64_t i = 0; i < N_OF(quiet); i++)
		quiet[i].outliers = 0;
	struct an_row *rows;
	int64_t nrows;
	struct at_error err = {0};
	TAP_OK(an_breakdown(quiet, N_OF(quiet), AN_BY_COMPONENT, &rows, &nrows, &err) == AT_OK,
	       "no outliers: %s", err.message);
	int zero = nrows == 5;
	for (int64_t i = 0; i < nrows; i++)
		zero &= rows[i].outliers == 0 && rows[i].pct_of_outliers == 0 &&
		        rows[i].pct_of_group == 0 && rows[i].avg_per_layer == 0;
	TAP_OK(zero, "no outliers: every ratio is 0");
	free(rows);

	TAP_OK(an_breakdown(NULL, 0, AN_BY_LAYER, &rows, &nrows, &err) == AT_OK, "no points: %s",
	       err.message);
	TAP_OK(nrows == 1 && strcmp(rows[0].key, "total") == 0 && rows[0].channels == 0 &&
	               rows[0].layers == 0 && rows[0].pct_of_group == 0,
	       "no points: one total row of zeros");
	free(rows);
}

static void test_bad_points(void)
{
	struct an_point_count bad[2] = {mixed[0], mixed[1]};
	struct an_row *rows = (struct an_row *)&rows;
	int64_t nrows = 7;
	struct at_error err = {0};
	bad[1].outliers = 51;
	TAP_OK(an_breakdown(bad, 2, AN_BY_LAYER, &rows, &nrows, &err) == AT_EINVAL &&
	               strstr(err.message, "layers.0.attention.out") && !rows && nrows == 0,
	       "more outliers than channels refused: %s", err.message);
	bad[1].outliers = -1;
	TAP_OK(an_breakdown(bad, 2, AN_BY_SITE, &rows, &nrows, &err) == AT_EINVAL,
	       "negative outliers refused: %s", err.message);
	bad[1].outliers = 0;
	bad[1].component = NULL;
	TAP_OK(an_breakdown(bad, 2, AN_BY_COMPONENT, &rows, &nrows, &err) == AT_EINVAL,
	       "a point without component refused by component: %s", err.message);
	TAP_OK(an_breakdown(bad, 2, AN_BY_LAYER, &rows, &nrows, &err) == AT_OK,
	       "but not by layer");
	free(rows);
	TAP_OK(an_breakdown(bad, 2, (enum an_breakdown)7, &rows, &nrows, &err) == AT_EINVAL,
	       "unknown breakdown refused: %s", err.message);
}

/* Table 4.1 of the RecurrentGemma study, one point per component. */
static void test_table_4_1(void)
{
	static const struct an_point_count components[] = {
		{"a", 1, "attention", "a", 86016, 106}, {"l", 1, "layer", "l", 133120, 170},
		{"m", 1, "mlp", "m", 732160, 1284},     {"n", 1, "norm", "n", 271360, 349},
		{"r", 1, "recurrent", "r", 322560, 555},
	};
	static const char *const order[] = {"mlp", "recurrent", "norm", "layer", "attention", "total"};
	static const double pct_of_outliers[] = {52.11, 22.52, 14.16, 6.90, 4.30, 100.00};
	static const double pct_of_component[] = {0.18, 0.17, 0.13, 0.13, 0.12, 0.16};
	struct an_row *rows;
	int64_t nrows;
	struct at_error err = {0};
	TAP_OK(an_breakdown(components, N_OF(components), AN_BY_COMPONENT, &rows, &nrows, &err) ==
	               AT_OK && nrows == 6,
	       "Table 4.1: %s", err.message);
	for (int64_t i = 0; i < nrows && i < 6; i++) {
		TAP_OK(strcmp(rows[i].key, order[i]) == 0, "Table 4.1 row %lld: %s", (long long)i,
		       rows[i].key);
		TAP_ROUNDS_TO(rows[i].pct_of_outliers, pct_of_outliers[i], 0.005, "% of total outliers");
		TAP_ROUNDS_TO(rows[i].pct_of_group, pct_of_component[i], 0.005, "% of component");
	}
	TAP_OK(rows[5].channels == 1545216 && rows[5].outliers == 2464, "Table 4.1 total");
	free(rows);
}

static void test_parse_groups(void)
{
	struct an_group *g;
	int n;
	struct at_error err = {0};
	TAP_OK(an_parse_groups("0-8,9-17,18-25", &g, &n, &err) == AT_OK && n == 3 && g[0].first == 0 &&
	               g[0].last == 8 && g[1].first == 9 && g[1].last == 17 && g[2].first == 18 &&
	               g[2].last == 25,
	       "0-8,9-17,18-25: %s", err.message);
	free(g);
	TAP_OK(an_parse_groups("5", &g, &n, &err) == AT_OK && n == 1 && g[0].first == 5 &&
	               g[0].last == 5,
	       "a single layer");
	free(g);
	TAP_OK(an_parse_groups("0,2-3,7", &g, &n, &err) == AT_OK && n == 3 && g[1].first == 2 &&
	               g[2].last == 7,
	       "singles, ranges and gaps");
	free(g);
	static const struct {
		const char *spec, *message;
	} bad[] = {
		{"", "empty list"},
		{"0-8,,9", "'' is not a layer N or a range A-B"},
		{"0-8,", "'' is not"},
		{"8-0", "range 8-0 runs backwards"},
		{"0-8,5-9", "5-9 overlaps 0-8"},
		{"0-8,8-9", "8-9 overlaps 0-8"},
		{"9-17,0-8", "0-8 comes before 9-17"},
		{"3,3", "3 overlaps 3"},
		{"a", "'a' is not"},
		{"-3", "'-3' is not"},
		{"1-2-3", "'1-2-3' is not"},
		{"3-", "'3-' is not"},
		{"0-8, 9-17", "' 9-17' is not"},
		{"99999999999", "'99999999999' is not"},
		{"+1", "'+1' is not"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		g = (struct an_group *)&g;
		n = 9;
		err.message[0] = 0;
		int rc = an_parse_groups(bad[i].spec, &g, &n, &err);
		TAP_OK(rc == AT_EINVAL && !g && n == 0 && strstr(err.message, bad[i].message),
		       "'%s' refused: %s", bad[i].spec, err.message);
	}
	TAP_OK(an_parse_groups(NULL, &g, &n, &err) == AT_EINVAL, "NULL refused");
}

static void test_groups(void)
{
	static const struct an_group groups[] = {{0, 0}, {1, 2}, {5, 9}};
	static const struct want want[] = {
		{"0", 150, 5, 1}, {"1-2", 570, 15, 2}, {"5-9", 0, 0, 0}, {"total", 720, 20, 3},
	};
	struct an_row *rows;
	int64_t nrows;
	struct at_error err = {0};
	int rc = an_breakdown_groups(mixed, N_OF(mixed), groups, 3, &rows, &nrows, &err);
	TAP_OK(rc == AT_OK, "groups: %s", err.message);
	if (!rc) {
		/* shares are of all 25 outliers, the 5 of the point of no layer included */
		check_rows("groups", rows, nrows, want, N_OF(want), 25);
		free(rows);
	}
	static const struct an_group overlapping[] = {{0, 3}, {2, 5}};
	TAP_OK(an_breakdown_groups(mixed, N_OF(mixed), overlapping, 2, &rows, &nrows, &err) ==
	               AT_EINVAL,
	       "overlapping groups refused: %s", err.message);
	TAP_OK(an_breakdown_groups(mixed, N_OF(mixed), groups, 0, &rows, &nrows, &err) == AT_EINVAL,
	       "no groups refused: %s", err.message);
}

/* Table 4.2: 26 layers, groups 0-8, 9-17, 18-25; several points per layer. */
static void test_table_4_2(void)
{
	static const int64_t totals[] = {730, 744, 937};
	static const double averages[] = {81.1, 82.7, 117.1};
	struct an_point_count points[26 * 2 + 1];
	char names[26 * 2 + 1][32];
	int64_t n = 0;
	for (int32_t layer = 0; layer < 26; layer++) {
		int group = layer < 9 ? 0 : layer < 18 ? 1 : 2;
		int32_t first = group == 0 ? 0 : group == 1 ? 9 : 18;
		int32_t size = group == 2 ? 8 : 9;
		/* spread the group's total over its layers, the remainder on its first */
		int64_t outliers = totals[group] / size + (layer == first ? totals[group] % size : 0);
		for (int half = 0; half < 2; half++) {
			snprintf(names[n], sizeof names[n], "layers.%d.%s", (int)layer, half ? "mlp" : "norm");
			points[n] = (struct an_point_count){names[n], layer, half ? "mlp" : "norm",
			                                    half ? "mlp.out" : "norm.out", 2560,
			                                    half ? outliers - outliers / 2 : outliers / 2};
			n++;
		}
	}
	points[n++] = (struct an_point_count){"final_norm.out", -1, "norm", "final_norm.out", 2560, 53};
	struct an_group *groups;
	int ngroups;
	struct an_row *rows;
	int64_t nrows;
	struct at_error err = {0};
	TAP_OK(an_parse_groups("0-8,9-17,18-25", &groups, &ngroups, &err) == AT_OK, "parse");
	TAP_OK(an_breakdown_groups(points, n, groups, ngroups, &rows, &nrows, &err) == AT_OK &&
	               nrows == 4,
	       "Table 4.2: %s", err.message);
	for (int g = 0; g < 3 && g < nrows; g++) {
		TAP_OK(rows[g].outliers == totals[g] && rows[g].layers == (g == 2 ? 8 : 9),
		       "Table 4.2 %s: %lld outliers over %lld layers", rows[g].key,
		       (long long)rows[g].outliers, (long long)rows[g].layers);
		TAP_ROUNDS_TO(rows[g].avg_per_layer, averages[g], 0.05, "average outliers per layer");
	}
	TAP_OK(strcmp(rows[0].key, "0-8") == 0 && strcmp(rows[2].key, "18-25") == 0, "group keys");
	TAP_OK(rows[3].outliers == 2411 && rows[3].layers == 26, "Table 4.2 total: the groups only");
	/* the abstract: late layers hold 44.4% more outliers per layer than early ones */
	TAP_ROUNDS_TO(100 * (rows[2].avg_per_layer / rows[0].avg_per_layer - 1), 44.4, 0.05,
	              "late vs early");
	free(rows);
	free(groups);
}

int main(void)
{
	test_breakdowns();
	test_empty();
	test_bad_points();
	test_table_4_1();
	test_parse_groups();
	test_groups();
	test_table_4_2();
	return tap_done();
}
