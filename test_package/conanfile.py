# SPDX-License-Identifier: MIT
"""`conan create` builds and runs this against the freshly created bilevel package."""
import os

from conan import ConanFile
from conan.tools.build import can_run
from conan.tools.cmake import CMake, CMakeDeps, CMakeToolchain, cmake_layout


class BilevelTestPackage(ConanFile):
    settings = "os", "arch", "compiler", "build_type"
    test_type = "explicit"

    def requirements(self):
        self.requires(self.tested_reference_str)

    def layout(self):
        cmake_layout(self)

    def generate(self):
        tc = CMakeToolchain(self)
        tc.user_presets_path = False  # write no CMakeUserPresets.json into the source tree
        # With bilevel:with_xtensor=True, also run the check on the xtensor policy.
        tc.cache_variables["BILEVEL_TEST_XTENSOR"] = bool(self.dependencies["bilevel"].options.with_xtensor)
        tc.generate()
        CMakeDeps(self).generate()

    def build(self):
        cmake = CMake(self)
        cmake.configure()
        cmake.build()

    def test(self):
        if can_run(self):
            self.run(os.path.join(self.cpp.build.bindir, "test_package"), env="conanrun")
