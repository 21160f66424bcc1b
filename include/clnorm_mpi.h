/**
 * @file clnorm_mpi.h
 * @brief Synchronised BatchNorm over MPI ranks: library clnorm_mpi (CMake target clnorm::clnorm_mpi, pkg-config
 * clnorm-mpi), built when CMake finds MPI.
 *
 * Every call is a collective over comm: every rank calls it with the same mode, maps (and per-activation
 * extent: the statistic groups), dtype, layout, optional-argument pattern, factor and epsilon (the layer calls:
 * the same configuration, factor schedule count and scale / momentum); batches may differ per rank, 0 included
 * (an empty rank's x, y, dy, dx may have a NULL buffer).
 *
 * Guarantees:
 * - Results equal the single-process call on the ranks' batches concatenated in rank order (to the precision
 *   of SEMANTICS.md).
 * - Running and saved statistics and dscale / dbias come out bit-identical on every rank and from run to run:
 *   the per-rank blocks are gathered (MPI_Allgather) and merged on the host in double precision in rank order
 *   (clnorm_bn_stats_merge_host(); the sums likewise), never by a reduction whose order can vary. (Every rank
 *   then applies the same float kernel to the same block: ranks on identical devices and drivers agree bit for
 *   bit, which is what a cluster of one GPU model gives.)
 * - Communication is O(groups) bytes, never O(tensor): per call one fixed-size agreement (a 256-byte header per
 *   rank: the local status and the arguments that must match) and one exchange of the blocks (12 bytes per
 *   group and rank forward, 8 backward, plus a 4-byte status). The backward without saved statistics adds
 *   the forward's exchange.
 * - A refusal on any rank (a bad argument, a buffer too small, a shape that differs between ranks, a total
 *   count below 2 values per statistic) is returned on every rank with the same status; clnorm_last_error()
 *   names the rank ("rank 2 of 4: ..."), nothing is written anywhere and no rank is left waiting: every rank
 *   validates locally first and the statuses are agreed on before anything is written. (A failure of the
 *   OpenCL runtime after the agreement, such as a lost device, is reported on its rank only.)
 * - MPI failures (with an error handler that returns) give ::CLNORM_ERROR_INVALID_STATE naming the MPI call.
 *
 * Threads: the calls use comm from the calling thread only (MPI_THREAD_SINGLE is enough when one thread drives
 * each rank).
 */
#ifndef CLNORM_MPI_H
#define CLNORM_MPI_H

#include <mpi.h>

#include "clnorm.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @brief Synchronised training forward: clnorm_bn_forward_training() with the statistics of the batches of
 * every rank of comm (collective).
 * @param comm the communicator; every rank of it calls.
 * @param ctx this rank's context.
 * @param mode ::CLNORM_BN_SPATIAL or ::CLNORM_BN_PER_ACTIVATION.
 * @param x this rank's input; batch 0 allowed.
 * @param y this rank's output, same shape, dtype and layout as x.
 * @param scale,bias parameter vectors, or both NULL (on every rank).
 * @param factor in [0, 1] (the same on every rank).
 * @param epsilon as in clnorm_bn_forward_training() (finite, >= FLT_MIN; the same on every rank).
 * @param running_mean,running_var updated with the global statistics (variance unbiased with the global count),
 *        or both NULL.
 * @param save_mean,save_invstd receive the global mean and invstd, or both NULL.
 * @return the same status on every rank: as clnorm_bn_forward_training(); ::CLNORM_ERROR_SHAPE when the ranks'
 *         statistic groups differ or the ranks hold fewer than 2 values per statistic together;
 *         ::CLNORM_ERROR_INVALID_ARGUMENT when the other arguments that must match differ.
 */
CLNORM_API clnorm_status clnorm_bn_forward_training_mpi(MPI_Comm comm, clnorm_context *ctx, clnorm_bn_mode mode,
                                                        const clnorm_tensor *x, const clnorm_tensor *y, cl_mem scale,
                                                        cl_mem bias, double factor, double epsilon, cl_mem running_mean,
                                                        cl_mem running_var, cl_mem save_mean, cl_mem save_invstd);
/**
 * @brief Synchronised backward: clnorm_bn_backward() of the concatenated batch, each rank getting its own dx and
 * the global dscale / dbias (collective).
 * @param comm the communicator.
 * @param ctx this rank's context.
 * @param mode ::CLNORM_BN_SPATIAL or ::CLNORM_BN_PER_ACTIVATION.
 * @param x this rank's input of the forward; batch 0 allowed.
 * @param dy this rank's output gradient.
 * @param dx receives this rank's input gradient, or NULL.
 * @param scale parameter vector, or NULL for 1.
 * @param dscale,dbias receive the global parameter gradients, or both NULL.
 * @param epsilon as in clnorm_bn_forward_training() (finite, >= FLT_MIN); used when the statistics are recomputed.
 * @param save_mean,save_invstd the global statistics of clnorm_bn_forward_training_mpi(), or both NULL: recomputed
 *        (one more exchange).
 * @return the same status on every rank: as clnorm_bn_backward(), and as clnorm_bn_forward_training_mpi() for
 *         arguments that differ between ranks.
 */
CLNORM_API clnorm_status clnorm_bn_backward_mpi(MPI_Comm comm, clnorm_context *ctx, clnorm_bn_mode mode,
                                                const clnorm_tensor *x, const clnorm_tensor *dy,
                                                const clnorm_tensor *dx, cl_mem scale, cl_mem dscale, cl_mem dbias,
                                                double epsilon, cl_mem save_mean, cl_mem save_invstd);
/**
 * @brief The layer's forward with global statistics (collective when train != 0): PuzzleLib's rules (n += 1,
 * factor = max(init_factor / n, min_factor), running statistics, saved statistics) with the statistics of every
 * rank's batch. Every rank's layer must have the same configuration and the same count n.
 * @param comm the communicator.
 * @param bn this rank's layer.
 * @param train 0: inference with the running statistics, no communication; else synchronised training.
 * @param x this rank's input; batch 0 allowed in training.
 * @param y this rank's output.
 * @return the same status on every rank (training), as clnorm_batchnorm_forward().
 */
CLNORM_API clnorm_status clnorm_batchnorm_forward_mpi(MPI_Comm comm, clnorm_batchnorm *bn, int train,
                                                      const clnorm_tensor *x, const clnorm_tensor *y);
/**
 * @brief The layer's backward with global gradients (collective): dx of this rank, and PuzzleLib's accumulation
 * grad = scale * g + momentum * grad with the global g (bit-identical on every rank).
 * @param comm the communicator.
 * @param bn this rank's layer, after clnorm_batchnorm_forward_mpi() in training.
 * @param x this rank's input of that forward.
 * @param dy this rank's output gradient.
 * @param dx receives this rank's input gradient, or NULL.
 * @param scale,momentum the accumulation weights (the same on every rank).
 * @return the same status on every rank, as clnorm_batchnorm_backward().
 */
CLNORM_API clnorm_status clnorm_batchnorm_backward_mpi(MPI_Comm comm, clnorm_batchnorm *bn, const clnorm_tensor *x,
                                                       const clnorm_tensor *dy, const clnorm_tensor *dx, float scale,
                                                       float momentum);

#ifdef __cplusplus
}
#endif
#endif /* CLNORM_MPI_H */
