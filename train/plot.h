/* loss.png: the training loss (and validation points) against the step, on a log scale, redrawn at
 * each evaluation from metrics.jsonl so a person can see the run at a glance. */
#ifndef RMX_PLOT_H
#define RMX_PLOT_H
#include <stddef.h>

/* Reads metrics_path (lines with "step", "split" and "loss") and writes the plot to png_path. */
int rmx_plot_losses(const char *metrics_path, const char *png_path, char *err, size_t errlen);

#endif
