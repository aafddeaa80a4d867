/* error.c: status codes, error messages and argument checks shared by the library. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

int at_fail(struct at_error *err, int code, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err->message, sizeof err->message, fmt, ap);
		va_end(ap);
		err->code = code;
	}
	return code;
}

const char *at_status_name(int code)
{
	switch (code) {
	case AT_OK: return "AT_OK";
	case AT_EINVAL: return "AT_EINVAL";
	case AT_ENOMEM: return "AT_ENOMEM";
	case AT_EIO: return "AT_EIO";
	case AT_EFORMAT: return "AT_EFORMAT";
	case AT_ENOTFOUND: return "AT_ENOTFOUND";
	case AT_ERANGE: return "AT_ERANGE";
	case AT_ECODEC: return "AT_ECODEC";
	case AT_ENOSYS: return "AT_ENOSYS";
	case AT_ECANCELED: return "AT_ECANCELED";
	default: return "AT_EUNKNOWN";
	}
}

const char *at_version(void)
{
	return PACKAGE_VERSION;
}

int at_tensor_check(const struct at_tensor *t, struct at_error *err)
{
	if (!t)
		return at_fail(err, AT_EINVAL, "tensor: NULL descriptor");
	if (t->dtype != AT_F32 && t->dtype != AT_F16 && t->dtype != AT_BF16)
		return at_fail(err, AT_EINVAL, "tensor: unknown dtype %d", (int)t->dtype);
	if (t->batches < 0 || t->rows < 0 || t->channels <= 0)
		return at_fail(err, AT_EINVAL,
		               "tensor: bad shape (batches %lld, rows %lld, channels %lld)",
		               (long long)t->batches, (long long)t->rows, (long long)t->channels);
	if (!t->data && t->batches > 0 && t->rows > 0)
		return at_fail(err, AT_EINVAL, "tensor: NULL data");
	return AT_OK;
}
