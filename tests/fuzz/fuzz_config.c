/* libFuzzer harness: the config loader (train/config.c) on YAML text plus --set strings.
 *
 * Input: YAML text, optionally followed by a line "\n---SET---\n" and then one override per line
 * ("key.path=value"), at most 8. Every successful load is also rendered back with
 * rmx_config_to_yaml and loaded again: the round trip must succeed (the header promises it). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "train/config.h"

#define SEP "\n---SET---\n"
#define MAX_SETS 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0; /* the loader takes a C string: an embedded NUL ends the YAML */
    const char *sets[MAX_SETS];
    int n_sets = 0;
    char *sep = strstr(text, SEP);
    if (sep) {
        *sep = 0;
        char *line = sep + strlen(SEP);
        while (line && *line && n_sets < MAX_SETS) {
            char *nl = strchr(line, '\n');
            if (nl) *nl = 0;
            sets[n_sets++] = line;
            line = nl ? nl + 1 : NULL;
        }
    }
    rmx_config *cfg = malloc(sizeof *cfg);
    char err[1024];
    int rc = rmx_config_load_string(cfg, "fuzz.yaml", text, sets, n_sets, err, sizeof err);
    rmx_fuzz_note("load", rc == 0 ? "ok" : err);
    if (rc == 0) {
        char *yaml = rmx_config_to_yaml(cfg);
        if (yaml) {
            rmx_config *again = malloc(sizeof *again);
            if (rmx_config_load_string(again, "roundtrip.yaml", yaml, NULL, 0, err, sizeof err) != 0) {
                fprintf(stderr, "round trip failed: %s\n--- rendered ---\n%s\n", err, yaml);
                abort();
            }
            rmx_config_free(again);
            free(again);
            free(yaml);
        }
        rmx_config_free(cfg);
    }
    free(cfg);
    free(text);
    return 0;
}
