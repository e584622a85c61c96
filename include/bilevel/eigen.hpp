// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// bilevel.hpp together with the Eigen policy: the one include of a program on the default
/// back end. bilevel.hpp itself names no back end (so that CUDA-only code can use it); this
/// header is the convenience for everyone who computes with Eigen.

#include "bilevel/bilevel.hpp"
#include "bilevel/policy/eigen.hpp"
