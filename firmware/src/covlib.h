/*
 * A stand-in for the C library the toolchain ships (newlib's libc.a): the
 * Makefile builds covlib.c and covlib_copy.S with -fdebug-prefix-map, so
 * their debug info names a build directory that exists on no machine, as a
 * packaged newlib's does. The coverage tests check that reports tell these
 * files apart from the program's own.
 */
#ifndef COVLIB_H
#define COVLIB_H

#include <stddef.h>

void *lib_memcpy(void *dst, const void *src, size_t n);
size_t lib_strlen(const char *s);

#endif
