package exporters

// Metric names. Dashboards, alerting rules and docs/metrics.md refer to these
// constants so that the names cannot drift apart; a test checks the document
// against the registry.
const (
	MetricRequestsTotal                  = "chimeraforge_requests_total"
	MetricRequestErrorsTotal             = "chimeraforge_request_errors_total"
	MetricRequestRetriesTotal            = "chimeraforge_request_retries_total"
	MetricGeneratedTokensTotal           = "chimeraforge_generated_tokens_total"
	MetricPromptTokensTotal              = "chimeraforge_prompt_tokens_total"
	MetricEvalDurationSecondsTotal       = "chimeraforge_eval_duration_seconds_total"
	MetricPromptEvalDurationSecondsTotal = "chimeraforge_prompt_eval_duration_seconds_total"
	MetricLoadDurationSecondsTotal       = "chimeraforge_load_duration_seconds_total"
	MetricContentionEventsTotal          = "chimeraforge_contention_events_total"
	MetricAgentRunsTotal                 = "chimeraforge_agent_runs_total"
	MetricArrivalsDroppedTotal           = "chimeraforge_arrivals_dropped_total"

	MetricTimeToFirstTokenSeconds  = "chimeraforge_time_to_first_token_seconds"
	MetricInterTokenLatencySeconds = "chimeraforge_inter_token_latency_seconds"
	MetricRequestDurationSeconds   = "chimeraforge_request_duration_seconds"
	MetricQueueWaitSeconds         = "chimeraforge_queue_wait_seconds"
	MetricAgentRunDurationSeconds  = "chimeraforge_agent_run_duration_seconds"
	MetricScheduleDelaySeconds     = "chimeraforge_schedule_delay_seconds"

	MetricRequestsInFlight = "chimeraforge_requests_in_flight"

	MetricBaselineTokensPerSecond  = "chimeraforge_baseline_tokens_per_second"
	MetricBaselineTimestampSeconds = "chimeraforge_baseline_timestamp_seconds"
	MetricCalibrating              = "chimeraforge_calibrating"
	MetricAgentActive              = "chimeraforge_agent_active"
	MetricCalibrationsTotal        = "chimeraforge_calibrations_total"

	MetricOllamaUp                          = "chimeraforge_ollama_up"
	MetricOllamaInfo                        = "chimeraforge_ollama_info"
	MetricOllamaVersionChangesTotal         = "chimeraforge_ollama_version_changes_total"
	MetricOllamaLoadedModels                = "chimeraforge_ollama_loaded_models"
	MetricOllamaModelSizeBytes              = "chimeraforge_ollama_model_size_bytes"
	MetricOllamaModelVRAMBytes              = "chimeraforge_ollama_model_vram_bytes"
	MetricOllamaModelVRAMRatio              = "chimeraforge_ollama_model_vram_ratio"
	MetricOllamaModelContextLength          = "chimeraforge_ollama_model_context_length"
	MetricOllamaModelExpiryTimestampSeconds = "chimeraforge_ollama_model_expiry_timestamp_seconds"
	MetricOllamaModelLoadsTotal             = "chimeraforge_ollama_model_loads_total"
	MetricOllamaModelUnloadsTotal           = "chimeraforge_ollama_model_unloads_total"
	MetricOllamaProbeDurationSeconds        = "chimeraforge_ollama_probe_duration_seconds"

	MetricShardInfo = "chimeraforge_shard_info"

	MetricConfigLastReloadSuccessful              = "chimeraforge_config_last_reload_successful"
	MetricConfigLastReloadSuccessTimestampSeconds = "chimeraforge_config_last_reload_success_timestamp_seconds"
	MetricBuildInfo                               = "chimeraforge_build_info"
)

// Label names.
const (
	LabelWorkload = "workload"
	LabelAgent    = "agent"
	LabelTarget   = "target"
	LabelModel    = "model"
	LabelStep     = "step"
	LabelOutcome  = "outcome"
	LabelReason   = "reason"
	LabelKind     = "kind"
	LabelVersion  = "version"

	// The shard of chimeraforge_shard_info (global.shard).
	LabelShardIndex = "index"
	LabelShardCount = "count"
)
