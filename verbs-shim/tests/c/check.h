/* What every C test here uses: CHECK fails the program with the line and
 * a message, OK reports a step that passed (the Rust side reads both). */
#ifndef SOFTRDMA_TEST_CHECK_H
#define SOFTRDMA_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(c, ...)                                                          \
	do {                                                                   \
		if (!(c)) {                                                    \
			fprintf(stderr, "FAIL line %d: %s: ", __LINE__, #c);   \
			fprintf(stderr, __VA_ARGS__);                          \
			fprintf(stderr, "\n");                                 \
			exit(1);                                               \
		}                                                              \
	} while (0)

#define OK(step) printf("OK %s\n", step)

#endif
