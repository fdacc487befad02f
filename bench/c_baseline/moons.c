/* The limit replay is measured against: micrograd's moons training written by hand in C.
 *
 * The same model (MLP 2-16-16-1, relu on the hidden layers), the same loss (mean hinge
 * loss + 1e-4 * sum of squared parameters), the same SGD (lr = 1 - 0.9 * k / 100) and
 * the same arithmetic in the same order as micrograd's demo: each neuron is
 * b + w0*x0 + w1*x1 + ..., the losses are summed left to right. Forward and backward are
 * plain loops over arrays: no graph, no allocation in the loop. Only gradient sums may
 * round differently (their order is not a graph's), so results match pyautograd's to
 * float rounding, not bitwise.
 *
 * Not a library: bench/bench_replay.py compiles it (cc -O2 -ffp-contract=off) and feeds it.
 *
 *   stdin:  n_samples steps repeats
 *           n_samples lines "x0 x1 y" (y is -1 or +1)
 *           the parameters in micrograd's order (layer by layer, neuron by neuron: w..., b)
 *   stdout: "seconds T" (the fastest of `repeats` trainings, each from the same start),
 *           "loss k L" for each step, then "param P" for each parameter after training.
 * Exit status 1 on bad input or no memory (printed to stderr).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N_LAYERS 3
static const int sizes[N_LAYERS + 1] = {2, 16, 16, 1};
static const double alpha = 1e-4;

typedef struct model {
    double *w[N_LAYERS];  /* w[l][j * nin + i]: neuron j of layer l, input i */
    double *b[N_LAYERS];
    double *dw[N_LAYERS];
    double *db[N_LAYERS];
    size_t n_params;
} model;

/* Per sample: the inputs, then each layer's outputs (after relu on hidden layers). */
typedef struct activations {
    double *out[N_LAYERS + 1];  /* out[0] is the sample's x; out[l + 1] is layer l's output */
    double *dout[N_LAYERS + 1];
} activations;

static double *take(double **pool, size_t n)
{
    double *p = *pool;
    *pool += n;
    return p;
}

static double relu(double a) { return a < 0.0 ? 0.0 : a; } /* micrograd: 0 if x < 0 else x */

/* Layer l applied to in[], written to out[]: out_j = relu?(b_j + sum_i w_ji * in_i). */
static void layer_forward(const model *m, int l, const double *in, double *out)
{
    int nin = sizes[l], nout = sizes[l + 1], nonlin = l != N_LAYERS - 1;
    for (int j = 0; j < nout; j++) {
        const double *w = m->w[l] + (size_t)j * nin;
        double act = m->b[l][j];
        for (int i = 0; i < nin; i++)
            act += w[i] * in[i];
        out[j] = nonlin ? relu(act) : act;
    }
}

/* Given dout (d loss / d out of layer l), adds to dw, db and writes din (if wanted). */
static void layer_backward(model *m, int l, const double *in, const double *out,
                           const double *dout, double *din)
{
    int nin = sizes[l], nout = sizes[l + 1], nonlin = l != N_LAYERS - 1;
    if (din)
        memset(din, 0, (size_t)nin * sizeof *din);
    for (int j = 0; j < nout; j++) {
        double dact = nonlin ? dout[j] * (double)(out[j] > 0.0) : dout[j];
        const double *w = m->w[l] + (size_t)j * nin;
        double *dw = m->dw[l] + (size_t)j * nin;
        m->db[l][j] += dact;
        for (int i = 0; i < nin; i++) {
            dw[i] += dact * in[i];
            if (din)
                din[i] += dact * w[i];
        }
    }
}

/* One step: forward over every sample, the loss, backward, SGD. Returns the loss. */
static double train_step(model *m, activations *acts, const double *y, int n, double lr)
{
    double data_loss = 0.0;
    for (int s = 0; s < n; s++) {
        for (int l = 0; l < N_LAYERS; l++)
            layer_forward(m, l, acts[s].out[l], acts[s].out[l + 1]);
        double score = acts[s].out[N_LAYERS][0];
        double margin = relu(1.0 + -y[s] * score);  /* (1 + -y*score).relu() */
        data_loss = s ? data_loss + margin : margin;  /* sum(losses): 0 + l0 + l1 ... */
        acts[s].dout[N_LAYERS][0] = margin; /* kept for the backward pass below */
    }
    double scale = 1.0 / n;
    double reg = 0.0;
    for (int l = 0; l < N_LAYERS; l++) {
        int nin = sizes[l], nout = sizes[l + 1];
        for (int j = 0; j < nout; j++) {  /* micrograd's parameters(): w..., b per neuron */
            for (int i = 0; i < nin; i++) {
                double p = m->w[l][(size_t)j * nin + i];
                reg += p * p;
            }
            reg += m->b[l][j] * m->b[l][j];
        }
    }
    double total = data_loss * scale + reg * alpha;

    /* backward: d total / d p = d data_loss / d p + 2 * alpha * p (as two adds, like p*p) */
    for (int l = 0; l < N_LAYERS; l++) {
        size_t nw = (size_t)sizes[l] * sizes[l + 1];
        for (size_t k = 0; k < nw; k++) {
            double p = m->w[l][k];
            m->dw[l][k] = alpha * p + alpha * p;
        }
        for (int j = 0; j < sizes[l + 1]; j++) {
            double p = m->b[l][j];
            m->db[l][j] = alpha * p + alpha * p;
        }
    }
    for (int s = 0; s < n; s++) {
        double margin = acts[s].dout[N_LAYERS][0];
        double dmargin = scale * (double)(margin > 0.0);
        acts[s].dout[N_LAYERS][0] = dmargin * -y[s];
        for (int l = N_LAYERS - 1; l >= 0; l--)
            layer_backward(m, l, acts[s].out[l], acts[s].out[l + 1], acts[s].dout[l + 1],
                           l ? acts[s].dout[l] : NULL);
    }

    for (int l = 0; l < N_LAYERS; l++) {
        size_t nw = (size_t)sizes[l] * sizes[l + 1];
        for (size_t k = 0; k < nw; k++)
            m->w[l][k] -= lr * m->dw[l][k];
        for (int j = 0; j < sizes[l + 1]; j++)
            m->b[l][j] -= lr * m->db[l][j];
    }
    return total;
}

/* Parameters in micrograd's order <-> the model's arrays. */
static void load_params(model *m, const double *flat)
{
    size_t k = 0;
    for (int l = 0; l < N_LAYERS; l++)
        for (int j = 0; j < sizes[l + 1]; j++) {
            for (int i = 0; i < sizes[l]; i++)
                m->w[l][(size_t)j * sizes[l] + i] = flat[k++];
            m->b[l][j] = flat[k++];
        }
}

static void store_params(const model *m, double *flat)
{
    size_t k = 0;
    for (int l = 0; l < N_LAYERS; l++)
        for (int j = 0; j < sizes[l + 1]; j++) {
            for (int i = 0; i < sizes[l]; i++)
                flat[k++] = m->w[l][(size_t)j * sizes[l] + i];
            flat[k++] = m->b[l][j];
        }
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0->tv_nsec);
}

int main(void)
{
    int n, steps, repeats;
    if (scanf("%d %d %d", &n, &steps, &repeats) != 3 || n <= 0 || steps < 0 || repeats <= 0) {
        fprintf(stderr, "moons: expected 'n_samples steps repeats' on stdin\n");
        return 1;
    }

    model m = {0};
    for (int l = 0; l < N_LAYERS; l++)
        m.n_params += (size_t)(sizes[l] + 1) * sizes[l + 1];
    size_t per_sample = 0;
    for (int l = 0; l <= N_LAYERS; l++)
        per_sample += 2 * (size_t)sizes[l];

    double *x_and_acts = calloc((size_t)n * per_sample, sizeof(double));
    double *params = calloc(4 * m.n_params, sizeof(double)); /* w, b | dw, db | start | out */
    double *y = calloc((size_t)n, sizeof(double));
    double *losses = calloc((size_t)steps + 1, sizeof(double));
    activations *acts = calloc((size_t)n, sizeof *acts);
    if (!x_and_acts || !params || !y || !losses || !acts) {
        fprintf(stderr, "moons: out of memory\n");
        return 1;
    }
    double *pool = params;
    for (int l = 0; l < N_LAYERS; l++) {
        m.w[l] = take(&pool, (size_t)sizes[l] * sizes[l + 1]);
        m.b[l] = take(&pool, (size_t)sizes[l + 1]);
    }
    for (int l = 0; l < N_LAYERS; l++) {
        m.dw[l] = take(&pool, (size_t)sizes[l] * sizes[l + 1]);
        m.db[l] = take(&pool, (size_t)sizes[l + 1]);
    }
    double *start = take(&pool, m.n_params), *final = take(&pool, m.n_params);

    pool = x_and_acts;
    for (int s = 0; s < n; s++)
        for (int l = 0; l <= N_LAYERS; l++) {
            acts[s].out[l] = take(&pool, (size_t)sizes[l]);
            acts[s].dout[l] = take(&pool, (size_t)sizes[l]);
        }
    for (int s = 0; s < n; s++)
        if (scanf("%lf %lf %lf", &acts[s].out[0][0], &acts[s].out[0][1], &y[s]) != 3) {
            fprintf(stderr, "moons: expected %d samples 'x0 x1 y'\n", n);
            return 1;
        }
    for (size_t k = 0; k < m.n_params; k++)
        if (scanf("%lf", &start[k]) != 1) {
            fprintf(stderr, "moons: expected %zu parameters\n", m.n_params);
            return 1;
        }

    double best = -1.0;
    for (int r = 0; r < repeats; r++) {
        load_params(&m, start);
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int k = 0; k < steps; k++)
            losses[k] = train_step(&m, acts, y, n, 1.0 - 0.9 * k / 100);
        double t = seconds_since(&t0);
        if (best < 0.0 || t < best)
            best = t;
    }
    store_params(&m, final);

    printf("seconds %.9g\n", best);
    for (int k = 0; k < steps; k++)
        printf("loss %d %.17g\n", k, losses[k]);
    for (size_t k = 0; k < m.n_params; k++)
        printf("param %.17g\n", final[k]);
    return 0;
}
