/* heap.h: allocation-failure injection for tests (link with -Wl,--wrap=malloc,...). */
#ifndef SM_TEST_HEAP_H
#define SM_TEST_HEAP_H

#include <stddef.h>

/** Fail the @p nth allocation from now on (1 = the next one), then every one after
 *  it when @p sticky; 0 disarms. */
void test_heap_fail_at(size_t nth, int sticky);
/** Allocations counted since the last test_heap_fail_at(). */
size_t test_heap_count(void);

#endif
