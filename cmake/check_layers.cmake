# Fails (cmake -P) when a source file under cpp/fastattn includes a header of a layer it may not
# use. The layers and what each may include (shared/DESIGN.md, "Layers"): a layer uses only those
# below it, and comm / kvcache need nothing but core.
# Inside a layer, a cpu/ folder is the CPU backend: it includes no header of a cuda/ folder and
# tests neither FASTATTN_WITH_CUDA nor __CUDACC__. The choice between the backends is made by the
# device-neutral entry points above it (kernels/<op>.cc, kernels/attention/*.cc).
#   cmake -DSRC=<repo root> -P cmake/check_layers.cmake
cmake_minimum_required(VERSION 3.18)  # script mode: policies as the project sets them (IN_LIST)
set(allowed_core core)
set(allowed_kernels core kernels)
set(allowed_comm core comm)
set(allowed_kvcache core kvcache)
set(allowed_layers core kernels comm kvcache layers)
set(allowed_models core kernels comm kvcache layers models)
set(allowed_runtime core kernels comm kvcache layers models runtime)
set(allowed_bindings core kernels comm kvcache layers models runtime bindings)

set(root "${SRC}/cpp/fastattn")
file(GLOB_RECURSE files "${root}/*.h" "${root}/*.cc" "${root}/*.cu" "${root}/*.cuh" "${root}/*.c")
set(bad 0)
foreach(f IN LISTS files)
  file(RELATIVE_PATH rel "${root}" "${f}")
  string(REGEX MATCH "^[^/]+" layer "${rel}")
  if(NOT DEFINED allowed_${layer})
    message(SEND_ERROR "check_layers: ${rel}: '${layer}' is not a known layer (cmake/check_layers.cmake)")
    math(EXPR bad "${bad} + 1")
    continue()
  endif()
  file(STRINGS "${f}" includes REGEX "^[ \t]*#[ \t]*include[ \t]+\"fastattn/[a-z_]+/")
  foreach(inc IN LISTS includes)
    string(REGEX REPLACE "^[^\"]*\"fastattn/([a-z_]+)/.*$" "\\1" used "${inc}")
    if(NOT used IN_LIST allowed_${layer})
      string(REPLACE ";" ", " may "${allowed_${layer}}")
      message(SEND_ERROR "check_layers: cpp/fastattn/${rel} includes fastattn/${used}/: the ${layer} "
                         "layer may use only ${may} (shared/DESIGN.md)")
      math(EXPR bad "${bad} + 1")
    endif()
  endforeach()
  if(rel MATCHES "(^|/)cpu/")
    file(STRINGS "${f}" cuda_includes REGEX "^[ \t]*#[ \t]*include[ \t]+\"fastattn/([a-z_]+/)*cuda/")
    foreach(inc IN LISTS cuda_includes)
      string(STRIP "${inc}" inc)
      message(SEND_ERROR "check_layers: cpp/fastattn/${rel}: ${inc}: the CPU backend includes no "
                         "CUDA header; route CUDA tensors in the device-neutral entry point "
                         "(kernels/<op>.cc)")
      math(EXPR bad "${bad} + 1")
    endforeach()
    file(STRINGS "${f}" cuda_tests REGEX "FASTATTN_WITH_CUDA|__CUDACC__")
    foreach(line IN LISTS cuda_tests)
      string(STRIP "${line}" line)
      message(SEND_ERROR "check_layers: cpp/fastattn/${rel}: '${line}': the CPU backend has no CUDA "
                         "branches; route CUDA tensors in the device-neutral entry point "
                         "(kernels/<op>.cc)")
      math(EXPR bad "${bad} + 1")
    endforeach()
  endif()
endforeach()
if(bad GREATER 0)
  message(FATAL_ERROR "check_layers: ${bad} layering violation(s)")
endif()
