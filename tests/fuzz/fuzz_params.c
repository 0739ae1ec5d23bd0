/* fuzz_params.c - libFuzzer target: key=value text through parsing and validation against
 * declarations of every parameter type. Lines of the input are the key=value arguments. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "params.h"

static const char *const choices[] = {"trt", "nvpq", "tpu", NULL};
static const qcal_param decls[] = {
    {.name = "bins", .type = QCAL_PARAM_INT, .def = {.i = 2048}, .min = 16, .max = 65536, .help = "i"},
    {.name = "percentile", .type = QCAL_PARAM_FLOAT, .def = {.f = 99.99}, .min = 0, .max = 100, .help = "f"},
    {.name = "abs", .type = QCAL_PARAM_BOOL, .def = {.i = 0}, .min = 0, .max = 1, .help = "b"},
    {.name = "variant", .type = QCAL_PARAM_CHOICE, .def = {.i = 0}, .choices = choices, .help = "c"},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    param_input in[16];
    size_t n = 0;
    qerror e = {0};
    for (char *line = strtok(text, "\n"); line && n < 16; line = strtok(NULL, "\n"))
        if (params_parse_kv(line, &in[n], &e) == 0)
            n++;
    qcal_value out[4];
    if (params_resolve("observer 'fuzz'", decls, 4, in, n, out, &e) == 0) {
        char buf[512];
        params_format_all(decls, 4, out, buf, sizeof buf);
        if (out[0].i < 16 || out[0].i > 65536 || !(out[1].f >= 0 && out[1].f <= 100) ||
            (out[2].i != 0 && out[2].i != 1) || out[3].i < 0 || out[3].i > 2)
            abort(); /* validation let an out-of-bounds value through */
    } else if (!e.msg[0]) {
        abort(); /* a refusal must say why */
    }
    free(text);
    return 0;
}
