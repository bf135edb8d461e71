/* rmx_backend_check: every backend the constructors return is complete, and a backend with any one
 * op missing is refused with a message that names it. The struct is a name, an impl pointer and
 * then nothing but function pointers, so NULLing each pointer-sized slot after the first two in turn
 * also proves that the check's table covers every op of the interface: an op added to the struct
 * but not to the table leaves its slot unchecked, and this test fails. */
#include <stddef.h>

#include "ktest.h"

static void check_complete(rmx_backend *be) {
    char err[200] = "", line[300];
    int rc = rmx_backend_check(be, err, sizeof err);
    snprintf(line, sizeof line, "%s backend passes the check%s%s", be->name, rc ? ": " : "", err);
    kt_expect(rc == 0, line);
}

/* One op NULLed (by its offset): refused, with the op named in the message. */
static int refused_with(const rmx_backend *be, size_t offset, const char *want) {
    rmx_backend copy = *be;
    void (*none)(void) = NULL;
    memcpy((char *)&copy + offset, &none, sizeof none);
    char err[200] = "";
    int rc = rmx_backend_check(&copy, err, sizeof err);
    if (rc == 0) return 0;
    if (!want) return err[0] != 0;
    char full[200];
    snprintf(full, sizeof full, "backend %s lacks %s", be->name, want);
    return strcmp(err, full) == 0;
}

int main(void) {
    rmx_backend *ref = rmx_backend_ref_create(), *cpu = rmx_backend_cpu_create(2);
    printf("rmx_backend_check\n");
    check_complete(ref);
    check_complete(cpu);

    /* every slot after name and impl is a function pointer of the interface */
    size_t first = offsetof(rmx_backend, alloc), slots = (sizeof(rmx_backend) - first) / sizeof(void (*)(void));
    int all = 1, count = 0;
    for (size_t i = 0; i < slots; i++, count++) all &= refused_with(cpu, first + i * sizeof(void (*)(void)), NULL);
    char line[200];
    snprintf(line, sizeof line, "each of the %d ops NULLed in turn is refused (the table covers the struct)", count);
    kt_expect(all && first == 2 * sizeof(void *), line);

    kt_expect(refused_with(cpu, offsetof(rmx_backend, attention_bwd), "attention_bwd"),
              "attention_bwd NULL: \"backend cpu lacks attention_bwd\"");
    kt_expect(refused_with(ref, offsetof(rmx_backend, linear_fwd), "linear_fwd"),
              "linear_fwd NULL: \"backend ref lacks linear_fwd\"");
    kt_expect(refused_with(cpu, offsetof(rmx_backend, alloc), "alloc"), "alloc NULL: \"backend cpu lacks alloc\"");
    kt_expect(refused_with(cpu, offsetof(rmx_backend, ema_update), "ema_update"),
              "ema_update NULL: \"backend cpu lacks ema_update\"");
    kt_expect(refused_with(cpu, offsetof(rmx_backend, gram_fwd), "gram_fwd") &&
                  refused_with(ref, offsetof(rmx_backend, gram_bwd), "gram_bwd"),
              "gram_fwd / gram_bwd NULL: \"backend cpu lacks gram_fwd\", \"backend ref lacks gram_bwd\"");
    kt_expect(refused_with(cpu, offsetof(rmx_backend, tv_loss), "tv_loss"),
              "tv_loss NULL (the last op): \"backend cpu lacks tv_loss\"");
    char small[8];
    rmx_backend copy = *ref;
    copy.conv2d_fwd = NULL;
    kt_expect(rmx_backend_check(&copy, small, sizeof small) == -1 && strlen(small) == sizeof small - 1,
              "a short message buffer is truncated, not overrun");
    kt_expect(rmx_backend_check(NULL, small, sizeof small) == -1 && rmx_backend_check(&copy, NULL, 0) == -1,
              "NULL backend refused; NULL message buffer allowed");

    ref->destroy(ref);
    cpu->destroy(cpu);
    return kt_finish("kernels_backend_check");
}
