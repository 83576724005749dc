# CUDA kernels (optional). FASTATTN_CUDA = AUTO | ON | OFF.
#   AUTO (default): on when a CUDA compiler is found and either a GPU is visible (nvidia-smi) or
#   FASTATTN_CUDA_ARCHS names the targets; so a GPU-less machine that happens to have nvcc does
#   not spend minutes compiling kernels it cannot run. ON forces a (cross-)build.
#   FASTATTN_CUDA_ARCHS      compute capabilities to compile, e.g. "70;75;80;90"
#                            (default: the local GPU's, else 75;80;90)
#   FASTATTN_CUDA_HEAD_DIMS  head dims to instantiate, FlashAttention-2 and decode kernels alike
#                            (default 64;80;96;128;256; the decode kernel takes those five only)
#   FASTATTN_CUDA_ALL_IMPLS  compile every MMA path for every arch that can run it (testing all
#                            three paths on one GPU); default: each path for its native arch only
#   FASTATTN_CUDA_PTXAS_VERBOSE  print registers / shared memory / spills per kernel
set(FASTATTN_CUDA "AUTO" CACHE STRING "Build CUDA kernels: AUTO, ON or OFF")
set(FASTATTN_CUDA_ARCHS "" CACHE STRING "CUDA compute capabilities, e.g. 70;75;80;90")
set(FASTATTN_CUDA_HEAD_DIMS "64;80;96;128;256" CACHE STRING "Head dims of the attention instances")
set(FASTATTN_CUDA_IMPLS "884;1688;16816" CACHE STRING "MMA implementations to build (884;1688;16816)")
option(FASTATTN_CUDA_ALL_IMPLS "Compile every MMA implementation for every arch that runs it" OFF)
option(FASTATTN_CUDA_PTXAS_VERBOSE "ptxas resource report per kernel" OFF)

set(FASTATTN_WITH_CUDA OFF)
if(NOT FASTATTN_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  execute_process(COMMAND nvidia-smi -L OUTPUT_QUIET ERROR_QUIET RESULT_VARIABLE _fa_smi_rc)
  if(CMAKE_CUDA_COMPILER AND (FASTATTN_CUDA STREQUAL "ON" OR NOT FASTATTN_CUDA_ARCHS STREQUAL "" OR _fa_smi_rc EQUAL 0))
    set(FASTATTN_WITH_CUDA ON)
  elseif(FASTATTN_CUDA STREQUAL "ON")
    message(FATAL_ERROR "FASTATTN_CUDA=ON but no CUDA compiler was found (set CMAKE_CUDA_COMPILER)")
  endif()
endif()

if(FASTATTN_WITH_CUDA)
  # nvcc's host compiler is the C++ compiler, whatever CUDAHOSTCXX says: the link line gets the
  # host compiler's library directories, and a second g++ there (seen: one whose directory holds
  # only a static libstdc++) put a private copy of the C++ runtime into the module, whose
  # iostreams then crashed formatting numbers.
  set(CMAKE_CUDA_HOST_COMPILER ${CMAKE_CXX_COMPILER})
  # One CUDA runtime, the shared one (CUDA::cudart below): not also the static one nvcc links by
  # default, or the process would hold two copies of the runtime's state.
  set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
  # enable_language must run at directory scope, not inside the function below.
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
endif()

function(fastattn_add_cuda target)
  set(archs "${FASTATTN_CUDA_ARCHS}")
  if(archs STREQUAL "")
    execute_process(COMMAND nvidia-smi --query-gpu=compute_cap --format=csv,noheader
                    OUTPUT_VARIABLE _smi RESULT_VARIABLE _smi_rc ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(_smi_rc EQUAL 0 AND _smi)
      string(REGEX MATCH "[0-9]+\\.[0-9]+" _cc "${_smi}")
      string(REPLACE "." "" archs "${_cc}")
    else()
      set(archs "75;80;90")
    endif()
  endif()
  message(STATUS "FastAttention CUDA: archs ${archs}, head dims ${FASTATTN_CUDA_HEAD_DIMS}, all impls ${FASTATTN_CUDA_ALL_IMPLS}")

  # Attention instances (FlashAttention-2 and split-KV decode) and their registry table.
  set(gen_dir ${CMAKE_BINARY_DIR}/generated/attention)
  # Lists go to the generator comma-separated (a ';' would split the argument).
  string(REPLACE ";" "," archs_csv "${archs}")
  string(REPLACE ";" "," dims_csv "${FASTATTN_CUDA_HEAD_DIMS}")
  string(REPLACE ";" "," impls_csv "${FASTATTN_CUDA_IMPLS}")
  set(gen_args --out ${gen_dir} --archs ${archs_csv} --head-dims ${dims_csv} --impls ${impls_csv})
  if(FASTATTN_CUDA_ALL_IMPLS)
    list(APPEND gen_args --all-impls)
  endif()
  if(NOT Python3_EXECUTABLE)
    find_package(Python3 COMPONENTS Interpreter REQUIRED)
  endif()
  execute_process(COMMAND ${Python3_EXECUTABLE} ${CMAKE_SOURCE_DIR}/cmake/generate_attention_instances.py ${gen_args}
                  RESULT_VARIABLE _gen_rc)
  if(NOT _gen_rc EQUAL 0)
    message(FATAL_ERROR "generating the attention instances failed")
  endif()
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
               ${CMAKE_SOURCE_DIR}/cmake/generate_attention_instances.py)

  file(STRINGS ${gen_dir}/manifest.txt manifest)
  set(instance_sources ${gen_dir}/attention_registry_table.cc)
  foreach(line ${manifest})
    string(REPLACE "|" ";" parts "${line}")
    list(GET parts 0 file)
    list(SUBLIST parts 1 -1 file_archs)
    set(gencode "")
    foreach(a ${file_archs})
      list(APPEND gencode "-gencode=arch=compute_${a},code=sm_${a}")
    endforeach()
    set_source_files_properties(${gen_dir}/${file} PROPERTIES COMPILE_OPTIONS "${gencode}")
    list(APPEND instance_sources ${gen_dir}/${file})
  endforeach()

  # CUDA-only code lives in cuda/ folders anywhere under cpp/fastattn: host code (.cc) is plain
  # C++ compiled by the C++ compiler; kernels (.cu, and the generated attention instances) go
  # through nvcc. Hand-written .cu files are compiled for every arch of the build.
  file(GLOB_RECURSE cuda_host_sources CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/cpp/fastattn/*/cuda/*.cc)
  file(GLOB_RECURSE cuda_kernel_sources CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/cpp/fastattn/*/cuda/*.cu)
  set(all_gencode "")
  foreach(a ${archs})
    list(APPEND all_gencode "-gencode=arch=compute_${a},code=sm_${a}")
  endforeach()
  set_source_files_properties(${cuda_kernel_sources} PROPERTIES COMPILE_OPTIONS "${all_gencode}")
  target_sources(${target} PRIVATE ${cuda_host_sources} ${cuda_kernel_sources} ${instance_sources})
  set_target_properties(${target} PROPERTIES CUDA_ARCHITECTURES OFF CUDA_STANDARD 17
                        CUDA_STANDARD_REQUIRED ON)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-O3 --expt-relaxed-constexpr>)
  if(FASTATTN_CUDA_PTXAS_VERBOSE)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Xptxas=-v>)
  endif()
  target_compile_definitions(${target} PUBLIC FASTATTN_WITH_CUDA=1)
  target_link_libraries(${target} PUBLIC CUDA::cudart fastattn_cublas)
endfunction()

# cuBLAS: the toolkit's when it has one (the lent GPU machine), else the nvidia-cublas wheel
# (pip install nvidia-cublas; cu12 / cu11 wheels for older toolkits) found through Python or
# FASTATTN_CUBLAS_ROOT (a folder holding include/cublas_v2.h and lib/libcublas.so*).
function(fastattn_find_cublas)
  if(TARGET fastattn_cublas)
    return()
  endif()
  add_library(fastattn_cublas INTERFACE)
  if(TARGET CUDA::cublas AND TARGET CUDA::cublasLt)
    target_link_libraries(fastattn_cublas INTERFACE CUDA::cublas CUDA::cublasLt)
    message(STATUS "FastAttention CUDA: cuBLAS from the toolkit")
    return()
  endif()
  set(roots "${FASTATTN_CUBLAS_ROOT}")
  if(Python3_EXECUTABLE)
    execute_process(COMMAND ${Python3_EXECUTABLE} -c
      "import nvidia, os; p = list(nvidia.__path__)[0]; print(';'.join(os.path.join(p, d) for d in ('cu13', 'cublas', 'cu12')))"
      OUTPUT_VARIABLE _py_roots OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    list(APPEND roots ${_py_roots})
  endif()
  find_path(FASTATTN_CUBLAS_INCLUDE cublas_v2.h PATHS ${roots} PATH_SUFFIXES include NO_DEFAULT_PATH)
  find_library(FASTATTN_CUBLAS_LIB NAMES cublas libcublas.so.13 libcublas.so.12 libcublas.so.11
               PATHS ${roots} PATH_SUFFIXES lib lib64 NO_DEFAULT_PATH)
  find_library(FASTATTN_CUBLASLT_LIB NAMES cublasLt libcublasLt.so.13 libcublasLt.so.12 libcublasLt.so.11
               PATHS ${roots} PATH_SUFFIXES lib lib64 NO_DEFAULT_PATH)
  if(NOT FASTATTN_CUBLAS_INCLUDE OR NOT FASTATTN_CUBLAS_LIB OR NOT FASTATTN_CUBLASLT_LIB)
    message(FATAL_ERROR "CUDA build: cuBLAS not found (the toolkit has none). `pip install nvidia-cublas` "
                        "(or nvidia-cublas-cu12 / -cu11 to match the toolkit) or set FASTATTN_CUBLAS_ROOT.")
  endif()
  target_include_directories(fastattn_cublas INTERFACE ${FASTATTN_CUBLAS_INCLUDE})
  target_link_libraries(fastattn_cublas INTERFACE ${FASTATTN_CUBLAS_LIB} ${FASTATTN_CUBLASLT_LIB})
  message(STATUS "FastAttention CUDA: cuBLAS ${FASTATTN_CUBLAS_LIB}")
endfunction()
if(FASTATTN_WITH_CUDA)
  fastattn_find_cublas()
endif()
