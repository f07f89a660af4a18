/* What dtrain shows people: a progress bar on a terminal (plain periodic lines
 * otherwise), per-epoch and per-interval metrics CSV files, and a gnuplot PNG of
 * loss and accuracy. Only rank 0 reports. */
#ifndef DTRAIN_REPORT_H
#define DTRAIN_REPORT_H

#include <stdio.h>

typedef enum { PROGRESS_AUTO, PROGRESS_BAR, PROGRESS_LINES, PROGRESS_OFF } progress_mode_t;

typedef struct report {
    progress_mode_t mode;      /* resolved: BAR, LINES or OFF */
    double log_every_s;        /* LINES: seconds between lines */
    double last_s;             /* time of the last bar update or line */
    int bar_drawn;             /* a bar is on the current terminal line */
    FILE *epochs_csv, *steps_csv;
    char epochs_path[4096], steps_path[4096];
} report_t;

/* mode AUTO becomes BAR on a terminal, else LINES. dir NULL: no CSV files.
 * append: keep existing rows (a resumed run). Returns -1 when a file cannot be
 * opened (message on stderr). */
int report_open(report_t *r, progress_mode_t mode, double log_every_s, const char *dir, int append);
void report_close(report_t *r);

/* Progress within an epoch; drawn when due (bar: 4 times a second). */
void report_progress(report_t *r, double now_s, int epoch, int epochs, long step, long steps,
                     double images_per_s, double loss, double acc, double lr, int force);
void report_step_row(report_t *r, double epoch_pos, long global_step, double loss, double acc,
                     double lr, double images_per_s);
void report_epoch(report_t *r, int epoch, int epochs, double train_loss, double train_acc,
                  double test_loss, double test_acc, double images_per_s, double seconds,
                  double lr);
/* Draws loss (per interval) and accuracy (per epoch) into png with gnuplot;
 * -1 with a message on failure. */
int report_plot(const report_t *r, const char *png);

#endif
