/* dtrain's progress output, metrics files and plot. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "report.h"

int report_open(report_t *r, progress_mode_t mode, double log_every_s, const char *dir, int append)
{
    memset(r, 0, sizeof(*r));
    r->mode = mode == PROGRESS_AUTO ? (isatty(STDOUT_FILENO) ? PROGRESS_BAR : PROGRESS_LINES) : mode;
    r->log_every_s = log_every_s;
    r->last_s = -1e30;
    if (dir == NULL) {
        return 0;
    }
    snprintf(r->epochs_path, sizeof(r->epochs_path), "%s/metrics.csv", dir);
    snprintf(r->steps_path, sizeof(r->steps_path), "%s/steps.csv", dir);
    int had = append && access(r->epochs_path, F_OK) == 0 && access(r->steps_path, F_OK) == 0;
    r->epochs_csv = fopen(r->epochs_path, had ? "a" : "w");
    r->steps_csv = fopen(r->steps_path, had ? "a" : "w");
    if (r->epochs_csv == NULL || r->steps_csv == NULL) {
        fprintf(stderr, "dtrain: cannot write %s: %s\n",
                r->epochs_csv == NULL ? r->epochs_path : r->steps_path, strerror(errno));
        report_close(r);
        return -1;
    }
    if (!had) {
        fprintf(r->epochs_csv, "epoch,train_loss,train_acc,test_loss,test_acc,images_per_s,seconds,lr\n");
        fprintf(r->steps_csv, "epoch_pos,step,loss,acc,lr,images_per_s\n");
    }
    return 0;
}

void report_close(report_t *r)
{
    if (r->epochs_csv != NULL) {
        fclose(r->epochs_csv);
    }
    if (r->steps_csv != NULL) {
        fclose(r->steps_csv);
    }
    r->epochs_csv = r->steps_csv = NULL;
}

void report_progress(report_t *r, double now_s, int epoch, int epochs, long step, long steps,
                     double images_per_s, double loss, double acc, double lr, int force)
{
    if (r->mode == PROGRESS_OFF) {
        return;
    }
    if (r->mode == PROGRESS_BAR) {
        if (!force && now_s - r->last_s < 0.25) {
            return;
        }
        enum { WIDTH = 30 };
        char bar[WIDTH + 1];
        int fill = steps > 0 ? (int)(WIDTH * step / steps) : WIDTH;
        for (int i = 0; i < WIDTH; i++) {
            bar[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
        }
        bar[WIDTH] = '\0';
        printf("\repoch %d/%d [%s] %3d%% %5ld/%ld  %7.1f img/s  loss %.4f  acc %.4f ", epoch,
               epochs, bar, steps > 0 ? (int)(100 * step / steps) : 100, step, steps, images_per_s,
               loss, acc);
        r->bar_drawn = 1;
    } else {
        if (!force && now_s - r->last_s < r->log_every_s) {
            return;
        }
        printf("epoch %d/%d step %ld/%ld  %.1f img/s  loss %.4f  acc %.4f  lr %.5f\n", epoch, epochs,
               step, steps, images_per_s, loss, acc, lr);
    }
    fflush(stdout);
    r->last_s = now_s;
}

void report_step_row(report_t *r, double epoch_pos, long global_step, double loss, double acc,
                     double lr, double images_per_s)
{
    if (r->steps_csv != NULL) {
        fprintf(r->steps_csv, "%.4f,%ld,%.6f,%.6f,%.6g,%.2f\n", epoch_pos, global_step, loss, acc, lr,
                images_per_s);
    }
}

void report_epoch(report_t *r, int epoch, int epochs, double train_loss, double train_acc,
                  double test_loss, double test_acc, double images_per_s, double seconds,
                  double lr)
{
    if (r->bar_drawn) {
        printf("\n");
        r->bar_drawn = 0;
    }
    printf("epoch %d/%d: train loss %.4f acc %.4f | test loss %.4f acc %.4f | %.1f img/s, %.1f s\n",
           epoch, epochs, train_loss, train_acc, test_loss, test_acc, images_per_s, seconds);
    fflush(stdout);
    if (r->epochs_csv != NULL) {
        fprintf(r->epochs_csv, "%d,%.6f,%.6f,%.6f,%.6f,%.2f,%.3f,%.6g\n", epoch, train_loss,
                train_acc, test_loss, test_acc, images_per_s, seconds, lr);
        fflush(r->epochs_csv);
        fflush(r->steps_csv);
    }
}

int report_plot(const report_t *r, const char *png)
{
    if (r->epochs_csv == NULL) {
        fprintf(stderr, "dtrain: --plot needs the metrics files (not written in this mode)\n");
        return -1;
    }
    fflush(r->epochs_csv);
    fflush(r->steps_csv);
    FILE *gp = popen("gnuplot", "w");
    if (gp == NULL) {
        fprintf(stderr, "dtrain: --plot: cannot run gnuplot: %s\n", strerror(errno));
        return -1;
    }
    /* loss (running mean, every 20 steps) on the left axis, accuracies per epoch on the right */
    fprintf(gp,
            "set terminal pngcairo size 1000,600 noenhanced\n"
            "set output '%s'\n"
            "set datafile separator ','\n"
            "set key autotitle columnhead outside bottom center horizontal\n"
            "set xlabel 'epoch'\nset ylabel 'loss'\nset y2label 'accuracy'\n"
            "set ytics nomirror\nset y2tics\nset y2range [0.5:1]\nset grid\n"
            "plot '%s' using 1:3 with lines lw 1 title 'train loss (running mean within the epoch)', "
            "'%s' using 1:2 with linespoints lw 2 title 'train loss (epoch)', "
            "'%s' using 1:5 axes x1y2 with linespoints lw 2 title 'test accuracy', "
            "'%s' using 1:3 axes x1y2 with linespoints lw 2 title 'train accuracy'\n",
            png, r->steps_path, r->epochs_path, r->epochs_path, r->epochs_path);
    int status = pclose(gp);
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "dtrain: --plot: gnuplot failed (status %d); is gnuplot installed?\n",
                status);
        return -1;
    }
    if (access(png, R_OK) != 0) {
        fprintf(stderr, "dtrain: --plot: gnuplot wrote no %s\n", png);
        return -1;
    }
    return 0;
}
