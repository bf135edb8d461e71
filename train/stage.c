/* The stages remixer-train knows (train/stage.h). */
#include "train/stage.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const rmx_stage_ops *const STAGES[] = {&rmx_stage_vae, &rmx_stage_diffusion, &rmx_stage_remix};

const rmx_stage_ops *rmx_stage_find(const char *name) {
    for (size_t i = 0; i < sizeof STAGES / sizeof STAGES[0]; i++)
        if (strcmp(STAGES[i]->name, name) == 0) return STAGES[i];
    return NULL;
}

const char *rmx_stage_names(void) {
    static char names[128];
    if (!names[0])
        for (size_t i = 0; i < sizeof STAGES / sizeof STAGES[0]; i++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "",
                     STAGES[i]->name);
    return names;
}

void rmx_stage_ema_update(rmx_params *p, float max_decay, int64_t step) {
    double n = (double)(step + 1);
    double decay = fmin((double)max_decay, (1.0 + n) / (10.0 + n));
    p->be->ema_update(p->be, p->span, (float)decay, p->data, p->ema);
}

void rmx_stage_use_ema(rmx_params *p, float *saved, int on) {
    size_t bytes = sizeof(float) * p->span;
    if (on) {
        p->be->copy(p->be, saved, p->data, bytes);
        p->be->copy(p->be, p->data, p->ema, bytes);
    } else {
        p->be->copy(p->be, p->data, saved, bytes);
    }
}
