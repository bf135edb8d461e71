/* loss.png: the training loss (and validation points) against the step, on a log scale, redrawn at
 * each evaluation from metrics.jsonl so a person can see the run at a glance.
 *
 * The picture (RMX_PLOT_WIDTH x RMX_PLOT_HEIGHT, RGB): the plot area with a light grid, tick labels
 * with numbers on both axes (whole steps; 1-2-5 x 10^k losses), the axis titles "step" (below) and
 * "loss (log scale)" (left, read bottom to top), the training loss as a blue line, validation
 * losses as red squares, and a legend in the top right corner of the plot area naming the series
 * shown ("train loss", "validation loss"). Text uses a built-in 5x7 bitmap font drawn at 2x. */
#ifndef RMX_PLOT_H
#define RMX_PLOT_H
#include <stddef.h>

#define RMX_PLOT_WIDTH 960
#define RMX_PLOT_HEIGHT 480

/* Reads metrics_path (lines with "step", "split" and "loss"; "split": "val" marks validation, any
 * other a training line; non-positive or non-finite losses are left out) and writes the plot to
 * png_path. A file without any loss to plot is an error ("no loss to plot yet"), nothing written;
 * a single point makes a plot. */
int rmx_plot_losses(const char *metrics_path, const char *png_path, char *err, size_t errlen);

#endif
