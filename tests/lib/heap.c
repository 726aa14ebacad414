/* heap.c: wraps malloc/calloc/realloc to fail on demand (allocation-failure tests). */
#include "config.h"

#include "tests/lib/heap.h"

#include <stddef.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t m);
void *__wrap_realloc(void *p, size_t n);

static size_t fail_at, count;
static int sticky;

void test_heap_fail_at(size_t nth, int s)
{
    fail_at = nth;
    sticky = s;
    count = 0;
}

size_t test_heap_count(void)
{
    return count;
}

static int should_fail(void)
{
    count++;
    if (!fail_at) return 0;
    return sticky ? count >= fail_at : count == fail_at;
}

void *__wrap_malloc(size_t n)
{
    return should_fail() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t m)
{
    return should_fail() ? NULL : __real_calloc(n, m);
}

void *__wrap_realloc(void *p, size_t n)
{
    return should_fail() ? NULL : __real_realloc(p, n);
}
