// _C.Engine: in-flight batching over an InferenceSession (runtime/engine.h), step by step.
// step() releases the GIL; add_request() and cancel() may be called from any thread while
// another thread steps.
#include <pybind11/stl.h>

#include "fastattn/bindings/bindings.h"
#include "fastattn/runtime/engine.h"

namespace fastattn::py_bind {

using runtime::Engine;
using runtime::EngineOptions;
using runtime::InferenceSession;
using runtime::RequestParams;

void bind_engine(py::module_& m) {
  py::class_<EngineOptions>(m, "EngineOptions", "Options of an Engine.")
      .def(py::init<>())
      .def_readwrite("max_running", &EngineOptions::max_running)
      .def_readwrite("step_tokens", &EngineOptions::step_tokens)
      .def_readwrite("static_batching", &EngineOptions::static_batching)
      .def_readwrite("preemption", &EngineOptions::preemption)
      .def_readwrite("max_preempted_kv_bytes", &EngineOptions::max_preempted_kv_bytes);

  py::class_<Engine>(m, "Engine",
                     "In-flight batching over a session (borrowed: the session's own generate() "
                     "and logits() refuse while the engine lives).")
      .def(py::init<InferenceSession&, const EngineOptions&>(), py::arg("session"),
           py::arg("options") = EngineOptions(), py::keep_alive<1, 2>())
      .def(
          "add_request",
          [](Engine& e, const std::vector<int64_t>& prompt, int64_t max_new_tokens,
             float temperature, int top_k, float top_p, uint64_t seed,
             const std::vector<int64_t>& stop_tokens) {
            RequestParams p;
            p.max_new_tokens = max_new_tokens;
            p.sampling = sampling_params(temperature, top_k, top_p, seed);
            p.stop_tokens = stop_tokens;
            return e.add_request(prompt, p);
          },
          py::arg("prompt"), py::arg("max_new_tokens"), py::arg("temperature") = 0.0f,
          py::arg("top_k") = 0, py::arg("top_p") = 1.0f, py::arg("seed") = 0,
          py::arg("stop_tokens") = std::vector<int64_t>(),
          "Queues a request; returns its id. Its tokens equal Session.generate([prompt], ...) "
          "with the same seed, whatever runs beside it.")
      .def("cancel", &Engine::cancel, py::arg("request"),
           "Cancels a waiting or running request (its KV blocks are freed at the next step, "
           "which reports it as (id, -1, True, 'cancelled')); False if unknown or finished.")
      .def(
          "step",
          [](Engine& e) {
            std::vector<runtime::EngineEvent> events;
            {
              py::gil_scoped_release release;
              events = e.step();
            }
            py::list out;
            for (const runtime::EngineEvent& ev : events) {
              out.append(py::make_tuple(ev.request, ev.token, ev.finished,
                                        runtime::finish_reason_name(ev.reason)));
            }
            return out;
          },
          "One step: [(request id, new token or -1, finished, finish reason), ...]; finish "
          "reason is '' (running), 'stop', 'length', 'cancelled' or 'error' (a failed forward "
          "pass ended the running requests; last_error has the message).")
      .def("shutdown", &Engine::shutdown,
           "Makes the next step the last, on every rank: it cancels what is left.")
      .def_property_readonly("stopped", &Engine::stopped)
      .def_property_readonly("rank", &Engine::rank)
      .def_property_readonly("world_size", &Engine::world_size)
      .def_property_readonly("has_work", &Engine::has_work)
      .def_property_readonly("last_error", &Engine::last_error)
      .def_property_readonly("max_running", [](const Engine& e) { return e.options().max_running; })
      .def_property_readonly("step_tokens", [](const Engine& e) { return e.options().step_tokens; })
      .def_property_readonly("stats", [](const Engine& e) {
        const runtime::EngineStats s = e.stats();
        py::dict d;
        d["waiting"] = s.waiting;
        d["running"] = s.running;
        d["kv_blocks_total"] = s.kv_blocks_total;
        d["kv_blocks_free"] = s.kv_blocks_free;
        d["kv_blocks_reserved"] = s.kv_blocks_reserved;
        d["steps"] = s.steps;
        d["prompt_tokens"] = s.prompt_tokens;
        d["generated_tokens"] = s.generated_tokens;
        d["finished"] = s.finished;
        d["cancelled"] = s.cancelled;
        d["errors"] = s.errors;
        d["step_seconds"] = s.step_seconds;
        d["preempted"] = s.preempted;
        d["preemptions"] = s.preemptions;
        d["resumed"] = s.resumed;
        d["preempted_kv_bytes"] = s.preempted_kv_bytes;
        d["recomputed"] = s.recomputed;
        return d;
      });
}

}  // namespace fastattn::py_bind
