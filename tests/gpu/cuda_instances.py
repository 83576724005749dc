"""Which compiled CUDA attention instances run on this GPU (fastattention._C.fmha_cuda_instances()
lists "impl/hdD/dtype (sm A)"; SASS for sm_A runs on the same major version at A or above, as the
registry's sass_runs_on says). A build configured with fewer head dims (FASTATTN_CUDA_HEAD_DIMS) or
without the 884 / 1688 paths (FASTATTN_CUDA_ALL_IMPLS=OFF) lacks some: their tests skip."""

import re

import fastattention


def _dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def instance_runs_here(impl, head_dim, dtype):
    import torch

    major, minor = torch.cuda.get_device_capability()
    cc = 10 * major + minor
    want = f"{impl}/hd{head_dim}/{_dtype_name(dtype)}"
    for entry in fastattention._C.fmha_cuda_instances():
        m = re.fullmatch(r"(\S+) \(sm (\d+)\)", entry.strip())
        if m and m.group(1) == want and int(m.group(2)) // 10 == cc // 10 and int(m.group(2)) <= cc:
            return True
    return False
