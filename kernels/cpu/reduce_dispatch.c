/*
 * Entry points of the reduction kernels: picks the kernel table for this CPU
 * once (the best level; dcomm_init lowers it as DCOMM_REDUCE_ISA says, through
 * dc_reduce_set_isa) and routes each call to it.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "reduce_impl.h"

#if defined(DC_REDUCE_BUILD_AVX2)
#include <cpuid.h>
#endif

typedef struct isa_level {
    const char *name;
    const dc_reduce_table_t *table;
    int (*usable)(void); /* does this CPU run it? */
} isa_level_t;

static int cpu_any(void)
{
    return 1;
}

#if defined(DC_REDUCE_BUILD_AVX2)
/* Not every compiler knows "f16c" for __builtin_cpu_supports: ask CPUID (leaf 1,
 * ECX bit 29). The AVX2 check already covers the OS saving the ymm state. */
static int cpu_f16c(void)
{
    unsigned eax, ebx, ecx, edx;

    return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C);
}

static int cpu_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && cpu_f16c();
}
#endif

#if defined(DC_REDUCE_BUILD_AVX512)
static int cpu_avx512(void)
{
    __builtin_cpu_init();
    /* the AVX-512 kernels fall back on the scalar ones only, but F16C is checked
     * too so that a level never needs more than the level below it */
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           cpu_f16c();
}
#endif

/* Lowest to highest. */
static const isa_level_t isa_levels[] = {
    {.name = "scalar", .table = &dc_reduce_table_scalar, .usable = cpu_any},
#if defined(DC_REDUCE_BUILD_AVX2)
    {.name = "avx2", .table = &dc_reduce_table_avx2, .usable = cpu_avx2},
#endif
#if defined(DC_REDUCE_BUILD_AVX512)
    {.name = "avx512", .table = &dc_reduce_table_avx512, .usable = cpu_avx512},
#endif
};

#define NUM_ISA_LEVELS (sizeof(isa_levels) / sizeof(isa_levels[0]))

static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static const isa_level_t *default_level;
static _Atomic(const isa_level_t *) active_level;

/* Index of the level called name, or -1 when there is none. */
static int isa_find(const char *name)
{
    for (size_t i = 0; i < NUM_ISA_LEVELS; i++) {
        if (strcmp(isa_levels[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static const isa_level_t *isa_choose(const char *requested)
{
    size_t best = 0;
    int req;

    for (size_t i = 1; i < NUM_ISA_LEVELS; i++) {
        if (isa_levels[i].usable()) {
            best = i;
        }
    }
    req = (requested != NULL) ? isa_find(requested) : -1;
    /* the variable can only lower the level: a higher one might not run here */
    if ((req >= 0) && ((size_t)req <= best) && isa_levels[req].usable()) {
        return &isa_levels[req];
    }
    return &isa_levels[best];
}

static void isa_init_default(void)
{
    default_level = isa_choose(NULL);
    atomic_store_explicit(&active_level, default_level, memory_order_release);
}

static const dc_reduce_table_t *reduce_table(void)
{
    const isa_level_t *level = atomic_load_explicit(&active_level, memory_order_acquire);

    if (level == NULL) {
        pthread_once(&default_once, isa_init_default);
        level = atomic_load_explicit(&active_level, memory_order_acquire);
    }
    return level->table;
}

const char *dc_reduce_isa_choose(const char *requested)
{
    return isa_choose(requested)->name;
}

const char *dc_reduce_isa(void)
{
    return reduce_table()->name;
}

int dc_reduce_set_isa(const char *isa)
{
    int idx;

    pthread_once(&default_once, isa_init_default);
    if (isa == NULL) {
        atomic_store_explicit(&active_level, default_level, memory_order_release);
        return 0;
    }
    idx = isa_find(isa);
    if ((idx < 0) || !isa_levels[idx].usable()) {
        return -1;
    }
    atomic_store_explicit(&active_level, &isa_levels[idx], memory_order_release);
    return 0;
}

int dc_reduce_supported(dcomm_dtype_t dtype, dcomm_op_t op)
{
    if (((unsigned)dtype >= DCOMM_DTYPE_COUNT) || ((unsigned)op >= DCOMM_OP_COUNT)) {
        return 0;
    }
    return dc_reduce_table_scalar.fn[dtype][op] != NULL;
}

size_t dc_reduce_dtype_size(dcomm_dtype_t dtype)
{
    switch (dtype) {
    case DCOMM_UINT8:
    case DCOMM_INT8:
        return 1;
    case DCOMM_FLOAT16:
    case DCOMM_BFLOAT16:
        return 2;
    case DCOMM_INT32:
    case DCOMM_FLOAT32:
        return 4;
    case DCOMM_INT64:
    case DCOMM_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

void dc_reduce3(void *dst, const void *a, const void *b, size_t n, dcomm_dtype_t dtype,
                dcomm_op_t op)
{
    dc_reduce_fn_t fn;

    if ((n == 0) || !dc_reduce_supported(dtype, op)) {
        return;
    }
    fn = reduce_table()->fn[dtype][op];
    fn(dst, a, b, n);
}

void dc_reduce(void *dst, const void *src, size_t n, dcomm_dtype_t dtype, dcomm_op_t op)
{
    dc_reduce3(dst, dst, src, n, dtype, op);
}
