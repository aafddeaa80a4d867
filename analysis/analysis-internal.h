/* analysis-internal.h: helpers shared by the analysis sources; not for tools. */
#ifndef AT_ANALYSIS_INTERNAL_H
#define AT_ANALYSIS_INTERNAL_H

#include "analysis.h"

/* Fill err (if non-NULL) with a printf-style message and return code. */
int an_fail(struct at_error *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif /* AT_ANALYSIS_INTERNAL_H */
