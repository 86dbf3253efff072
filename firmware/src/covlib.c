/* Part of the stand-in C library: see covlib.h. */
#include "covlib.h"

size_t lib_strlen(const char *s)
{
	size_t n = 0;

	while (s[n] != '\0') {
		n++;
	}
	return n;
}
