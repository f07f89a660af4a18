/*
 * transports/topology.c against a machine described by an hwloc XML file
 * (what DCOMM_TOPO_FILE names), written here from hwloc's synthetic description of
 * 2 packages x 1 NUMA node x 4 cores: the counts, the printout, where
 * --bind-to core/numa puts local ranks (spread over NUMA nodes first,
 * wrapping when ranks outnumber cores), and the errors for bad input.
 */
#include <hwloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "topology.h"

static char xml_path[] = "/tmp/dcomm-topo-XXXXXX";

static int write_xml(void **state)
{
    hwloc_topology_t t;
    int fd = mkstemp(xml_path);

    (void)state;
    if (fd < 0 || hwloc_topology_init(&t) != 0 ||
        hwloc_topology_set_synthetic(t, "pack:2 numa:1 core:4 pu:1") != 0 ||
        hwloc_topology_load(t) != 0 || hwloc_topology_export_xml(t, xml_path, 0) != 0) {
        return -1;
    }
    close(fd);
    hwloc_topology_destroy(t);
    return 0;
}

static int remove_xml(void **state)
{
    (void)state;
    return unlink(xml_path);
}

static void test_counts(void **state)
{
    dc_machine_t *m;
    dc_machine_counts_t c;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    (void)state;
    assert_int_equal(dc_machine_load(xml_path, &m), DCOMM_OK);
    dc_machine_counts(m, &c);
    assert_int_equal(c.packages, 2);
    assert_int_equal(c.numa_nodes, 2);
    assert_int_equal(c.cores, 8);
    assert_int_equal(c.pus, 8);
    assert_non_null(strstr(dc_machine_source(m), xml_path));
    dc_machine_print(m, f);
    fclose(f);
    assert_non_null(strstr(text, "2 NUMA node(s), 8 core(s)"));
    assert_non_null(strstr(text, "numa 1: 4 core(s), cpus 4-7"));
    free(text);
    dc_machine_destroy(m);
}

static void expect_cpus(dc_machine_t *m, const char *mode, int lr, int ls, const char *want)
{
    char buf[64];

    assert_int_equal(dc_machine_rank_cpus(m, mode, lr, ls, buf, sizeof(buf)), 0);
    assert_string_equal(buf, want);
}

static void test_placement(void **state)
{
    dc_machine_t *m;
    char buf[128];

    (void)state;
    assert_int_equal(dc_machine_load(xml_path, &m), DCOMM_OK);
    /* core: NUMA node lr % 2, then the next core inside it */
    expect_cpus(m, "core", 0, 4, "0");
    expect_cpus(m, "core", 1, 4, "4");
    expect_cpus(m, "core", 2, 4, "1");
    expect_cpus(m, "core", 3, 4, "5");
    expect_cpus(m, "core", 9, 10, "4"); /* 10 ranks on 8 cores: wraps */
    expect_cpus(m, "numa", 0, 2, "0-3");
    expect_cpus(m, "numa", 1, 2, "4-7");
    expect_cpus(m, "numa", 2, 3, "0-3");
    assert_int_equal(dc_machine_rank_cpus(m, "socket", 0, 2, buf, sizeof(buf)), -1);
    assert_non_null(strstr(buf, "unknown binding 'socket'"));
    assert_int_equal(dc_machine_rank_cpus(m, "core", 2, 2, buf, sizeof(buf)), -1);
    dc_machine_destroy(m);
}

static void test_bad_file(void **state)
{
    dc_machine_t *m = NULL;

    (void)state;
    assert_true(dc_machine_load("/nonexistent/topo.xml", &m) < 0);
    assert_null(m);
    assert_non_null(strstr(dc_error_get(), "DCOMM_TOPO_FILE=/nonexistent/topo.xml"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts),
        cmocka_unit_test(test_placement),
        cmocka_unit_test(test_bad_file),
    };

    return cmocka_run_group_tests(tests, write_xml, remove_xml);
}
