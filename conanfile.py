# SPDX-License-Identifier: MIT
"""Conan 2 recipe for bilevel, a header-only C++20 library.

The package is made by the project's own CMake install rules, so it holds the headers and
the same bilevelConfig.cmake a plain `cmake --install` gives; consumers' find_package(bilevel)
reads that file, which finds Eigen3 and ZLIB itself (Conan's generated config files for them,
or the system's when the profile lists them under [platform_requires]; see
conan/profiles/debian and scripts/conan_check.sh). The same file offers the optional
components: find_package(bilevel REQUIRED COMPONENTS xtensor) gives bilevel::xtensor, whose
xtensor and OpenBLAS it finds with find_dependency(); with_xtensor=True makes Conan provide
those two as requirements (test_package checks that variant through the component).
"""
import os
import re

from conan import ConanFile
from conan.errors import ConanException
from conan.tools.build import check_min_cppstd
from conan.tools.cmake import CMake, CMakeDeps, CMakeToolchain, cmake_layout
from conan.tools.files import copy, load

required_conan_version = ">=2.0.5"


class BilevelConan(ConanFile):
    name = "bilevel"
    description = "Header-only C++20 library for bilevel and multilevel optimization"
    license = "MIT"
    topics = ("optimization", "bilevel", "hypergradient", "header-only")
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    options = {"with_xtensor": [True, False]}
    default_options = {"with_xtensor": False}
    exports_sources = "include/*", "CMakeLists.txt", "cmake/*", "LICENSE*"
    no_copy_source = True

    def set_version(self):
        # One source of truth: project(bilevel VERSION x.y.z ...) in CMakeLists.txt.
        if self.version:
            return
        text = load(self, os.path.join(self.recipe_folder, "CMakeLists.txt"))
        match = re.search(r"project\(\s*bilevel\s+VERSION\s+([0-9]+(?:\.[0-9]+)*)", text)
        if not match:
            raise ConanException("bilevel: no project(bilevel VERSION ...) line in CMakeLists.txt")
        self.version = match.group(1)

    def layout(self):
        cmake_layout(self)

    def requirements(self):
        # ConanCenter names; Debian 12 ships eigen 3.4.0, zlib 1.2.13, xtensor 0.24.3 and
        # OpenBLAS 0.3.21, which conan/profiles/debian declares as [platform_requires].
        self.requires("eigen/3.4.0")
        self.requires("zlib/[>=1.2.11 <2]")
        if self.options.with_xtensor:
            # bilevel/policy/xtensor.hpp: xtensor containers, CBLAS (OpenBLAS) for GEMM/GEMV.
            self.requires("xtensor/[>=0.24.3 <0.25]")
            self.requires("openblas/[>=0.3.20 <0.4]")

    def validate(self):
        check_min_cppstd(self, 20)

    def package_id(self):
        # Headers only: one package for every setting and option (the option changes the
        # requirements, not the files: the xtensor component's CMake files are installed
        # either way).
        self.info.clear()

    def generate(self):
        tc = CMakeToolchain(self)
        tc.user_presets_path = False  # write no CMakeUserPresets.json next to the sources
        tc.cache_variables["BILEVEL_BUILD_TESTS"] = False
        tc.cache_variables["BILEVEL_BUILD_EXAMPLES"] = False
        tc.cache_variables["BILEVEL_BUILD_BENCHMARKS"] = False
        # The installed package carries the xtensor component (bilevelXtensorTargets.cmake,
        # bilevelComponent-xtensor.cmake) whatever this build finds; its dependencies are
        # looked for on the consumer's side, so don't probe for them here.
        tc.cache_variables["BILEVEL_WITH_XTENSOR"] = False
        tc.generate()
        CMakeDeps(self).generate()

    def build(self):
        # Nothing to compile; configuring produces bilevelConfig.cmake and the install rules.
        cmake = CMake(self)
        cmake.configure()

    def package(self):
        copy(self, "LICENSE*", self.source_folder, os.path.join(self.package_folder, "licenses"))
        cmake = CMake(self)
        cmake.install()

    def package_info(self):
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
        self.cpp_info.set_property("cmake_file_name", "bilevel")
        self.cpp_info.set_property("cmake_target_name", "bilevel::bilevel")
        # Consumers use the installed share/cmake/bilevel/bilevelConfig.cmake (targets, C++20
        # compile feature, version file, find_dependency on Eigen3 and ZLIB, the components
        # xtensor and cuda) rather than a CMakeDeps-generated copy: CMakeToolchain puts
        # builddirs on CMAKE_PREFIX_PATH. That also works when eigen and zlib come from
        # [platform_requires], for which CMakeDeps generates nothing. Where eigen and zlib are
        # real Conan packages, a consumer can opt into a generated file instead:
        # CMakeDeps.set_property("bilevel", "cmake_find_mode", "config"), which is what the two
        # names above are for; that file has bilevel::bilevel only (with xtensor and openblas
        # folded in when with_xtensor=True), no bilevel::xtensor. Mirroring the component with
        # cpp_info.components is not done: CMakeDeps' aggregate root target would have to take
        # another name than bilevel::bilevel, which the core component needs.
        self.cpp_info.set_property("cmake_find_mode", "none")
        self.cpp_info.builddirs = [os.path.join("share", "cmake", "bilevel")]
        self.cpp_info.set_property("pkg_config_name", "bilevel")
        self.cpp_info.requires = ["eigen::eigen", "zlib::zlib"]
        if self.options.with_xtensor:
            self.cpp_info.requires += ["xtensor::xtensor", "openblas::openblas"]
