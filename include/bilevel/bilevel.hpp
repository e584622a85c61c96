// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Everything in bilevel that needs no back end: the concepts, the solver, the hypergradient
/// strategies and the optimizers. It names no tensor policy, so that a translation unit that
/// uses only the CUDA (or xtensor) policy can include it without Eigen; include one policy
/// next to it, or bilevel/eigen.hpp for this header together with the Eigen policy.

#include "bilevel/core/checkpoint.hpp"
#include "bilevel/core/errors.hpp"
#include "bilevel/core/failure_policy.hpp"
#include "bilevel/core/hypergradient_report.hpp"
#include "bilevel/core/hypergradient_strategy.hpp"
#include "bilevel/core/learner.hpp"
#include "bilevel/core/level.hpp"
#include "bilevel/core/optimizer.hpp"
#include "bilevel/core/second_order.hpp"
#include "bilevel/core/solver.hpp"
#include "bilevel/core/tensor_policy.hpp"
#include "bilevel/hypergrad/finite_difference.hpp"
#include "bilevel/hypergrad/first_order.hpp"
#include "bilevel/hypergrad/fixed_point.hpp"
#include "bilevel/hypergrad/forward_mode.hpp"
#include "bilevel/hypergrad/implicit_cg.hpp"
#include "bilevel/hypergrad/neumann.hpp"
#include "bilevel/hypergrad/nystrom.hpp"
#include "bilevel/hypergrad/penalty.hpp"
#include "bilevel/hypergrad/sama.hpp"
#include "bilevel/hypergrad/soba.hpp"
#include "bilevel/hypergrad/unrolled.hpp"
#include "bilevel/hypergrad/zero_order.hpp"
#include "bilevel/optim/adam.hpp"
#include "bilevel/optim/clip.hpp"
#include "bilevel/optim/frozen.hpp"
#include "bilevel/optim/schedule.hpp"
#include "bilevel/optim/sgd.hpp"
