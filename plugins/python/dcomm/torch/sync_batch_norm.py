"""SyncBatchNorm: batch normalization whose statistics cover the batch of
every rank, as horovod.torch.SyncBatchNorm. One allreduce of (sum, sum of
squares, count) per channel forward and one of the two gradient sums backward."""

import torch
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from .mpi_ops import Sum, allreduce, global_process_set


def _channel_dims(x):
    return [0] + list(range(2, x.dim()))


def _per_channel(v, x):
    return v.reshape([1, -1] + [1] * (x.dim() - 2))


class _SyncBatchNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps, momentum, ps):
        dims = _channel_dims(x)
        xd = x.detach().double()
        local = torch.cat([xd.sum(dims), (xd * xd).sum(dims),
                           torch.tensor([x.numel() / x.shape[1]], dtype=torch.float64)])
        total = allreduce(local, op=Sum, name=None, process_set=ps)
        c = x.shape[1]
        count = total[2 * c].item()
        mean = total[:c] / count
        var = (total[c:2 * c] / count - mean * mean).clamp_min(0)
        if running_mean is not None:
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(momentum * mean.to(running_mean.dtype))
                unbiased = var * (count / max(count - 1, 1))
                running_var.mul_(1 - momentum).add_(momentum * unbiased.to(running_var.dtype))
        invstd = torch.rsqrt(var + eps)
        xhat = ((xd - _per_channel(mean, x)) * _per_channel(invstd, x)).to(x.dtype)
        ctx.save_for_backward(xhat, weight, invstd.to(x.dtype))
        ctx.count, ctx.ps = count, ps
        y = xhat
        if weight is not None:
            y = y * _per_channel(weight, x) + _per_channel(bias, x)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        xhat, weight, invstd = ctx.saved_tensors
        dims = _channel_dims(xhat)
        c = xhat.shape[1]
        local_dy = grad_y.sum(dims)
        local_dy_xhat = (grad_y * xhat).sum(dims)
        total = allreduce(torch.cat([local_dy, local_dy_xhat]), op=Sum, process_set=ctx.ps)
        mean_dy = _per_channel(total[:c] / ctx.count, xhat)
        mean_dy_xhat = _per_channel(total[c:] / ctx.count, xhat)
        scale = invstd if weight is None else invstd * weight
        grad_x = (grad_y - mean_dy - xhat * mean_dy_xhat) * _per_channel(scale, xhat)
        # Weight and bias gradients stay local; DistributedOptimizer averages them.
        grad_w = local_dy_xhat if weight is not None and ctx.needs_input_grad[1] else None
        grad_b = local_dy if weight is not None and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None, None, None, None, None


class SyncBatchNorm(_BatchNorm):
    """Drop-in for torch.nn.BatchNorm1d/2d/3d: in training, mean and variance
    are computed over the batches of all ranks of process_set."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, process_set=global_process_set):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.process_set = process_set

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError("expected at least 2D input (got %dD input)" % x.dim())

    def forward(self, x):
        self._check_input_dim(x)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        if not self.training or self.process_set.size() == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                self.training or not self.track_running_stats, momentum,
                                self.eps)
        return _SyncBatchNormFn.apply(x, self.weight, self.bias, self.running_mean,
                                      self.running_var, self.eps, momentum, self.process_set)
