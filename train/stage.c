/* The stages remixer-train knows (train/stage.h). */
#include "train/stage.h"

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
