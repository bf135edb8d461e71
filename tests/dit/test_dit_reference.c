/* The DiT against its PyTorch twin, without torch: a reference case written by
 * bench/diffusion/make_dit_reference.py (tests/dit/ref/dit_tiny.h5 is committed; the torch test
 * dit_twin makes fresh ones) is read with the HDF5 C library, and on the ref and cpu backends:
 *   - the registries' names, shapes and order equal the twin's state_dict (pos_embed first: the
 *     state registry, then the trained one);
 *   - with the twin's weights loaded by name: the output, the loss (mean squared error against the
 *     target: the backend's mse_loss with scale 1 / element count), every parameter gradient and
 *     the input gradient, and the weights after one AdamW step of the backend on the registry.
 * The twin computed in float64; differences are Remixer's float32 error. Tolerances (normwise:
 * max |ours - twin| / max |twin| per tensor): output, loss, every gradient and the input
 * gradient 1e-5 (the ref backend lands near 5e-7); updated weights within 1e-3 lr + 1e-6 of
 * the twin's (AdamW's first step is lr sign(g), insensitive to the gradient's error except where
 * |g| is within that error of 0: such elements are counted and exempt. The key bias is one:
 * softmax ignores a shift of a row's scores, so its true gradient is 0 and both sides hold
 * rounding noise, ~1e-18 in the twin's float64, ~1e-9 in float32, which AdamW turns into steps
 * of different sizes).
 * A file with only /names and /shapes (make_dit_reference.py --names-only) checks those only.
 * A file with the attribute style = 1 (make_dit_reference.py --style; the committed one is
 * tests/dit/ref/dit_tiny_style.h5) is a model with style tokens: the four style tensors at the
 * end of the registry, and the forward is rmx_dit_forward_style with /inputs/style and
 * /inputs/style_keep (some samples' styles dropped); the same checks and tolerances.
 *
 * usage: test_dit_reference FILE.h5 */
#include <hdf5.h>

#include "dit_test.h"

#define TOL_OUT 1e-5
#define TOL_GRAD 1e-5

typedef struct {
    hid_t file;
    const char *path;
} h5ref;

static int h5_exists(h5ref *r, const char *path) { return H5Lexists(r->file, path, H5P_DEFAULT) > 0; }

static double attr_double(h5ref *r, const char *name) {
    double v = NAN;
    hid_t a = H5Aexists(r->file, name) > 0 ? H5Aopen(r->file, name, H5P_DEFAULT) : -1;
    if (a < 0 || H5Aread(a, H5T_NATIVE_DOUBLE, &v) < 0) {
        fprintf(stderr, "%s: attribute %s missing\n", r->path, name);
        exit(1);
    }
    H5Aclose(a);
    return v;
}

/* The dataset at path as float (converted by HDF5), its element count and shape; exits when it is
 * missing. */
static float *read_floats(h5ref *r, const char *path, size_t *count, int *ndim, hsize_t *dims) {
    hid_t ds = h5_exists(r, path) ? H5Dopen2(r->file, path, H5P_DEFAULT) : -1;
    if (ds < 0) {
        fprintf(stderr, "%s: dataset %s missing\n", r->path, path);
        exit(1);
    }
    hid_t space = H5Dget_space(ds);
    hsize_t local[8];
    int nd = H5Sget_simple_extent_ndims(space);
    H5Sget_simple_extent_dims(space, dims ? dims : local, NULL);
    size_t n = (size_t)H5Sget_simple_extent_npoints(space);
    float *out = malloc((n ? n : 1) * sizeof *out);
    if (H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) {
        fprintf(stderr, "%s: cannot read %s\n", r->path, path);
        exit(1);
    }
    H5Sclose(space);
    H5Dclose(ds);
    if (count) *count = n;
    if (ndim) *ndim = nd;
    return out;
}

static void read_ints(h5ref *r, const char *path, int32_t *out, size_t want) {
    hid_t ds = h5_exists(r, path) ? H5Dopen2(r->file, path, H5P_DEFAULT) : -1;
    hid_t space = ds >= 0 ? H5Dget_space(ds) : -1;
    if (space < 0 || (size_t)H5Sget_simple_extent_npoints(space) != want ||
        H5Dread(ds, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) {
        fprintf(stderr, "%s: cannot read %s (%zu values)\n", r->path, path, want);
        exit(1);
    }
    H5Sclose(space);
    H5Dclose(ds);
}

/* /names: fixed-length strings, into count rows of RMX_PARAM_NAME_MAX. */
static char (*read_names(h5ref *r, int *count))[RMX_PARAM_NAME_MAX] {
    hid_t ds = H5Dopen2(r->file, "names", H5P_DEFAULT);
    hid_t type = ds >= 0 ? H5Dget_type(ds) : -1;
    hid_t space = ds >= 0 ? H5Dget_space(ds) : -1;
    if (space < 0 || H5Tget_class(type) != H5T_STRING || H5Tis_variable_str(type) > 0) {
        fprintf(stderr, "%s: /names must be fixed-length strings\n", r->path);
        exit(1);
    }
    size_t width = H5Tget_size(type);
    int n = (int)H5Sget_simple_extent_npoints(space);
    char *block = calloc((size_t)n * width + 1, 1);
    hid_t mem = H5Tcopy(H5T_C_S1);
    H5Tset_size(mem, width);
    H5Tset_strpad(mem, H5T_STR_NULLPAD);
    if (H5Dread(ds, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, block) < 0) {
        fprintf(stderr, "%s: cannot read /names\n", r->path);
        exit(1);
    }
    char (*names)[RMX_PARAM_NAME_MAX] = calloc((size_t)n, sizeof *names);
    for (int i = 0; i < n; i++) {
        size_t len = strnlen(block + (size_t)i * width, width);
        if (len >= RMX_PARAM_NAME_MAX) len = RMX_PARAM_NAME_MAX - 1;
        memcpy(names[i], block + (size_t)i * width, len);
    }
    H5Tclose(mem);
    H5Tclose(type);
    H5Sclose(space);
    H5Dclose(ds);
    free(block);
    *count = n;
    return names;
}

static rmx_dit_hparams file_hparams(h5ref *r) {
    rmx_dit_hparams hp;
    rmx_dit_hparams_default(&hp);
    hp.in_channels = (int)attr_double(r, "in_channels");
    hp.height = (int)attr_double(r, "height");
    hp.width = (int)attr_double(r, "width");
    hp.patch = (int)attr_double(r, "patch");
    hp.hidden = (int)attr_double(r, "hidden");
    hp.depth = (int)attr_double(r, "depth");
    hp.heads = (int)attr_double(r, "heads");
    hp.mlp_ratio = (float)attr_double(r, "mlp_ratio");
    hp.num_classes = (int)attr_double(r, "num_classes");
    hp.freq_dim = (int)attr_double(r, "freq_dim");
    hp.micro_batch = H5Aexists(r->file, "batch") > 0 ? (int)attr_double(r, "batch") : 1;
    hp.style = H5Aexists(r->file, "style") > 0 ? (int)attr_double(r, "style") : 0;
    return hp;
}

/* tensor k of the state_dict order: the state registry's, then the trained registry's */
static const rmx_param_info *nth_tensor(rmx_dit *dit, int k, rmx_params **reg, int *id) {
    rmx_params *s = rmx_dit_state(dit), *p = rmx_dit_params(dit);
    *reg = k < s->count ? s : p;
    *id = k < s->count ? k : k - s->count;
    return rmx_params_get(*reg, *id);
}

static void check_names(h5ref *r, rmx_dit *dit, const char *bn) {
    int n;
    char (*names)[RMX_PARAM_NAME_MAX] = read_names(r, &n);
    size_t scount;
    float *shapes = read_floats(r, "shapes", &scount, NULL, NULL);
    int total = rmx_dit_state(dit)->count + rmx_dit_params(dit)->count;
    CHECK(n == total && scount == (size_t)n * 4, "%s: the twin has %d tensors, we have %d", bn, n, total);
    int mismatches = 0;
    for (int k = 0; k < n && k < total; k++) {
        rmx_params *reg;
        int id;
        const rmx_param_info *t = nth_tensor(dit, k, &reg, &id);
        int same = strcmp(t->name, names[k]) == 0;
        for (int d = 0; d < 4; d++)
            same &= (int64_t)shapes[k * 4 + d] == (d < t->ndim ? t->shape[d] : 0);
        if (!same && mismatches++ < 5) {
            char desc[160];
            fprintf(stderr, "  %s: tensor %d: ours %s, twin %s [%g, %g, %g, %g]\n", bn, k,
                    rmx_params_describe(reg, id, desc, sizeof desc), names[k], shapes[k * 4],
                    shapes[k * 4 + 1], shapes[k * 4 + 2], shapes[k * 4 + 3]);
        }
    }
    CHECK(mismatches == 0, "%s: %d tensors differ in name, shape or position from the twin's "
          "state_dict", bn, mismatches);
    printf("%s: %d tensors in state_dict order (names, shapes), %zu trained parameters\n", bn, n,
           rmx_dit_params(dit)->numel);
    free(names);
    free(shapes);
}

static void load_weights(h5ref *r, rmx_dit *dit) {
    int total = rmx_dit_state(dit)->count + rmx_dit_params(dit)->count;
    char path[160];
    for (int k = 0; k < total; k++) {
        rmx_params *reg;
        int id;
        const rmx_param_info *t = nth_tensor(dit, k, &reg, &id);
        snprintf(path, sizeof path, "weights/%s", t->name);
        size_t n;
        float *v = read_floats(r, path, &n, NULL, NULL);
        if (n != t->numel) {
            fprintf(stderr, "%s: %s has %zu values, want %zu\n", r->path, path, n, t->numel);
            exit(1);
        }
        reg->be->to_backend(reg->be, rmx_params_data(reg, id), v, n * sizeof *v);
        free(v);
    }
}

static void run_case(h5ref *r, rmx_backend *be) {
    const char *bn = be->name;
    rmx_dit_hparams hp = file_hparams(r);
    rmx_dit *dit = dit_create_or_die(be, &hp, 1);
    check_names(r, dit, bn);
    if (!h5_exists(r, "weights")) {
        rmx_dit_free(dit);
        return;
    }
    rmx_params *p = rmx_dit_params(dit), *s = rmx_dit_state(dit);
    /* our own positions against the twin's, before they are overwritten */
    float *pos_ours = host_copy(be, s->data, s->numel);
    float *pos_twin = read_floats(r, "weights/pos_embed", NULL, NULL, NULL);
    double pos_err = rel_diff(pos_ours, pos_twin, s->numel);
    CHECK(pos_err <= 1e-6, "%s: pos_embed differs from the twin's by %.3g", bn, pos_err);
    free(pos_ours);
    free(pos_twin);
    load_weights(r, dit);

    int n = hp.micro_batch;
    size_t count;
    float *xh = read_floats(r, "inputs/x", &count, NULL, NULL);
    float *target_h = read_floats(r, "inputs/target", NULL, NULL, NULL);
    float *t = read_floats(r, "inputs/t", NULL, NULL, NULL);
    int32_t *y = malloc((size_t)n * sizeof *y);
    read_ints(r, "inputs/y", y, (size_t)n);
    CHECK(count == (size_t)n * dit_sample_count(&hp), "%s: input size %zu", bn, count);
    float *x = backend_input(be, xh, count), *target = backend_input(be, target_h, count);
    float *deps = be->alloc(be, count * sizeof(float)), *dx = be->alloc(be, count * sizeof(float));
    float *loss = be->alloc(be, sizeof(float));

    float *style = NULL;
    uint8_t *keep = NULL;
    if (hp.style) {
        size_t scount;
        float *sh = read_floats(r, "inputs/style", &scount, NULL, NULL);
        CHECK(scount == count, "%s: style input size %zu", bn, scount);
        style = backend_input(be, sh, count);
        free(sh);
        int32_t *k32 = malloc((size_t)n * sizeof *k32);
        read_ints(r, "inputs/style_keep", k32, (size_t)n);
        keep = malloc((size_t)n);
        int kept = 0;
        for (int i = 0; i < n; i++) kept += (keep[i] = k32[i] != 0);
        free(k32);
        printf("%s: style tokens on, %d of %d styles kept\n", bn, kept, n);
    }

    /* forward and the loss */
    rmx_dit_step_begin(dit);
    const float *out = hp.style ? rmx_dit_forward_style(dit, n, x, t, y, style, keep)
                                : rmx_dit_forward(dit, n, x, t, y);
    float *out_h = host_copy(be, out, count);
    float *out_ref = read_floats(r, "output", NULL, NULL, NULL);
    double out_err = rel_diff(out_h, out_ref, count);
    be->mse_loss(be, count, out, target, 1.0f / (float)count, loss, deps);
    float loss_h = host_get(be, loss);
    float *loss_ref = read_floats(r, "loss", NULL, NULL, NULL);
    double loss_err = fabs(loss_h - (double)loss_ref[0]) / fabs((double)loss_ref[0]);
    printf("%s: output %.2e, loss %.8g vs twin %.8g (%.2e)\n", bn, out_err, loss_h, loss_ref[0],
           loss_err);
    CHECK(out_err <= TOL_OUT, "%s: output differs from the twin's by %.3g", bn, out_err);
    CHECK(loss_err <= TOL_OUT, "%s: loss differs from the twin's by %.3g", bn, loss_err);

    /* backward */
    rmx_dit_backward(dit, n, deps, dx);
    float *grad = host_copy(be, p->grad, p->span), *dx_h = host_copy(be, dx, count);
    float *dx_ref = read_floats(r, "dx", NULL, NULL, NULL);
    double dx_err = rel_diff(dx_h, dx_ref, count), worst = 0.0;
    const char *worst_name = "";
    char path[160];
    float **grad_ref = calloc((size_t)p->count, sizeof *grad_ref);
    for (int i = 0; i < p->count; i++) {
        const rmx_param_info *ti = rmx_params_get(p, i);
        snprintf(path, sizeof path, "grads/%s", ti->name);
        grad_ref[i] = read_floats(r, path, NULL, NULL, NULL);
        double e = rel_diff(grad + ti->offset, grad_ref[i], ti->numel);
        CHECK(e <= TOL_GRAD, "%s: gradient of %s differs from the twin's by %.3g", bn, ti->name, e);
        if (e > worst) {
            worst = e;
            worst_name = ti->name;
        }
    }
    printf("%s: %d gradients, worst %.2e (%s); input gradient %.2e\n", bn, p->count, worst,
           worst_name, dx_err);
    CHECK(dx_err <= TOL_GRAD, "%s: input gradient differs from the twin's by %.3g", bn, dx_err);

    /* one AdamW step of the backend over the flat buffers */
    rmx_adamw_hparams ah = {(float)attr_double(r, "lr"), (float)attr_double(r, "beta1"),
                            (float)attr_double(r, "beta2"), (float)attr_double(r, "eps"),
                            (float)attr_double(r, "weight_decay"), 1};
    be->adamw(be, p->span, p->n_decay, p->data, p->grad, p->m, p->v, &ah);
    float *updated = host_copy(be, p->data, p->span);
    double worst_w = 0.0;
    const char *worst_w_name = "";
    size_t exempt = 0;
    for (int i = 0; i < p->count; i++) {
        const rmx_param_info *ti = rmx_params_get(p, i);
        snprintf(path, sizeof path, "updated/%s", ti->name);
        float *want = read_floats(r, path, NULL, NULL, NULL);
        double band = TOL_GRAD * max_abs(grad_ref[i], ti->numel);
        for (size_t e = 0; e < ti->numel; e++) {
            if (fabs(grad_ref[i][e]) <= band) {
                exempt++;
                continue;
            }
            double d = fabs((double)updated[ti->offset + e] - want[e]);
            if (d > worst_w) {
                worst_w = d;
                worst_w_name = ti->name;
            }
        }
        free(want);
    }
    printf("%s: after AdamW (lr %g): worst weight difference %.2e = %.2e lr (%s); %zu of %zu "
           "elements with |g| within the gradient tolerance of 0 exempt\n",
           bn, ah.lr, worst_w, worst_w / ah.lr, worst_w_name, exempt, p->numel);
    CHECK(worst_w <= 1e-3 * ah.lr + 1e-6, "%s: weights after AdamW differ by %.3g", bn, worst_w);

    for (int i = 0; i < p->count; i++) free(grad_ref[i]);
    free(grad_ref);
    free(updated);
    free(grad);
    free(dx_h);
    free(dx_ref);
    free(out_h);
    free(out_ref);
    free(loss_ref);
    free(xh);
    free(target_h);
    free(t);
    free(y);
    be->free(be, x);
    be->free(be, target);
    be->free(be, deps);
    be->free(be, dx);
    be->free(be, loss);
    if (style) be->free(be, style);
    free(keep);
    rmx_dit_free(dit);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s FILE.h5\n", argv[0]);
        return 2;
    }
    h5ref r = {H5Fopen(argv[1], H5F_ACC_RDONLY, H5P_DEFAULT), argv[1]};
    if (r.file < 0) {
        fprintf(stderr, "cannot open %s\n", argv[1]);
        return 1;
    }
    rmx_backend *ref = rmx_backend_ref_create(), *cpu = rmx_backend_cpu_create(0);
    run_case(&r, ref);
    run_case(&r, cpu);
    ref->destroy(ref);
    cpu->destroy(cpu);
    H5Fclose(r.file);
    return test_finish("dit_reference");
}
