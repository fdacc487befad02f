/* Optimizers: one call updates every parameter of a model (pyautograd.optim).
 *
 * The updates are torch.optim's (SGD and Adam/AdamW, single-tensor path), written
 * term by term in torch's order so float64 results agree to rounding. The state
 * buffers (momentum, Adam's moments) belong to the caller, which allocates n doubles
 * each and keeps them for the optimizer's life; nothing here lives in the arena.
 * Not here: param groups, amsgrad, nesterov, maximize.
 */
#include <math.h>
#include "arena.h"

/* AG_EINVALID when an id is not a live node: these take ids through cffi. */
static int check_ids(const ag_id *params, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!ag_node_checked(params[i])) {
            ag_fail(AG_EINVALID, 0);
            return AG_EINVALID;
        }
    return AG_OK;
}

/* torch's lerp: start + weight * (end - start), computed from the nearer end. */
static double lerp(double start, double end, double weight)
{
    return fabs(weight) < 0.5 ? start + weight * (end - start)
                              : end - (end - start) * (1.0 - weight);
}

/* p -= lr * d, where d = grad (+ weight_decay * p), then through momentum:
 *   buf = d on the first step, buf = momentum * buf + d after. */
int ag_sgd_step(const ag_id *params, size_t n, double lr, double momentum, double weight_decay,
                double *momentum_buffer, int first_step)
{
    if (momentum != 0.0 && !momentum_buffer) {
        ag_fail(AG_EINVALID, 0);
        return AG_EINVALID;
    }
    if (check_ids(params, n) != AG_OK)
        return AG_EINVALID;
    ag_note_data_edit(); /* parameters' data (arena.h) */
    for (size_t i = 0; i < n; i++) {
        ag_node *p = ag_node_at(params[i]);
        double d = p->grad;
        if (weight_decay != 0.0)
            d = d + weight_decay * p->data;
        if (momentum != 0.0) {
            momentum_buffer[i] = first_step ? d : momentum_buffer[i] * momentum + d;
            d = momentum_buffer[i];
        }
        p->data = p->data + (-lr) * d;
    }
    return AG_OK;
}

/* Adam (step counts from 1):
 *   g = grad (+ weight_decay * p, unless decoupled: then p *= 1 - lr * weight_decay)
 *   m = lerp(m, g, 1 - beta1);  v = v * beta2 + (1 - beta2) * g * g
 *   p -= lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
 * The step is *steps_taken + 1, and the count goes up here, with the update: a Ctrl-C
 * can come after this call returns, never between the two. */
int ag_adam_step(const ag_id *params, size_t n, double lr, double beta1, double beta2, double eps,
                 double weight_decay, int decoupled, long long *steps_taken, double *exp_avg,
                 double *exp_avg_sq)
{
    long long step = steps_taken ? *steps_taken + 1 : 0;
    if (step < 1 || !exp_avg || !exp_avg_sq) {
        ag_fail(AG_EINVALID, 0);
        return AG_EINVALID;
    }
    if (check_ids(params, n) != AG_OK)
        return AG_EINVALID;
    double step_size = lr / (1.0 - pow(beta1, (double)step));
    double bias_correction2_sqrt = sqrt(1.0 - pow(beta2, (double)step));
    ag_note_data_edit(); /* parameters' data (arena.h) */
    for (size_t i = 0; i < n; i++) {
        ag_node *p = ag_node_at(params[i]);
        double g = p->grad;
        if (weight_decay != 0.0) {
            if (decoupled)
                p->data = p->data * (1.0 - lr * weight_decay);
            else
                g = g + weight_decay * p->data;
        }
        exp_avg[i] = lerp(exp_avg[i], g, 1.0 - beta1);
        exp_avg_sq[i] = exp_avg_sq[i] * beta2 + (1.0 - beta2) * g * g;
        double denom = sqrt(exp_avg_sq[i]) / bias_correction2_sqrt + eps;
        p->data = p->data + (-step_size) * exp_avg[i] / denom;
    }
    *steps_taken = step;
    return AG_OK;
}
