# Strict warnings for the project's own test, example and benchmark targets only;
# never added to the INTERFACE target, so consumers' flags are their own.
add_library(diffusion_warnings INTERFACE)
add_library(diffusion::warnings ALIAS diffusion_warnings)
target_compile_options(diffusion_warnings INTERFACE
  $<$<CXX_COMPILER_ID:GNU,Clang>:-Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion
     -Wdouble-promotion -Wold-style-cast -Wnon-virtual-dtor -Werror>)
