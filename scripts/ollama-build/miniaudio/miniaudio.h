/*
 * Stub of miniaudio.h for building Ollama from the Go module proxy.
 *
 * Why it exists: Go module zips drop vendor/ folders, so the copy of
 * miniaudio that llama.cpp vendors (llama/llama.cpp/vendor/miniaudio) is
 * missing from `github.com/ollama/ollama@v0.17.4` in the module cache, and
 * Debian 12 does not package it. The only user is
 * llama/llama.cpp/tools/mtmd/mtmd-helper.cpp, which decodes audio input for
 * multimodal models. This stub declares exactly the types and functions that
 * file uses, and every decoder call fails, so audio input is rejected cleanly
 * while text generation (all that chimeraforge's tests need) is untouched.
 *
 * scripts/ollama-test-server.sh puts the folder above this one on CGO_CPPFLAGS
 * (the code includes "miniaudio/miniaudio.h") for the Ollama build only. If
 * a new Ollama version uses more of miniaudio, the build fails with an
 * undeclared ma_* name: add it here, returning an error.
 */
#ifndef CF_MINIAUDIO_STUB_H
#define CF_MINIAUDIO_STUB_H

#include <stddef.h>
#include <stdint.h>

typedef uint32_t ma_uint32;
typedef uint64_t ma_uint64;
typedef int ma_result;

#define MA_SUCCESS 0
#define MA_NOT_IMPLEMENTED (-29) /* same value as real miniaudio */

typedef enum {
    ma_format_unknown = 0,
    ma_format_u8 = 1,
    ma_format_s16 = 2,
    ma_format_s24 = 3,
    ma_format_s32 = 4,
    ma_format_f32 = 5
} ma_format;

typedef struct {
    ma_format format;
    ma_uint32 channels;
    ma_uint32 sampleRate;
} ma_decoder_config;

typedef struct {
    ma_decoder_config config;
} ma_decoder;

/* The includer defines MA_API as `static`; `static inline` here keeps every
 * function local to that one translation unit without unused warnings. */

static inline ma_decoder_config ma_decoder_config_init(ma_format outputFormat, ma_uint32 outputChannels, ma_uint32 outputSampleRate)
{
    ma_decoder_config config;
    config.format = outputFormat;
    config.channels = outputChannels;
    config.sampleRate = outputSampleRate;
    return config;
}

static inline ma_result ma_decoder_init_memory(const void* pData, size_t dataSize, const ma_decoder_config* pConfig, ma_decoder* pDecoder)
{
    (void)pData;
    (void)dataSize;
    if (pDecoder != NULL && pConfig != NULL) {
        pDecoder->config = *pConfig;
    }
    return MA_NOT_IMPLEMENTED;
}

static inline ma_result ma_decoder_get_length_in_pcm_frames(ma_decoder* pDecoder, ma_uint64* pLength)
{
    (void)pDecoder;
    if (pLength != NULL) {
        *pLength = 0;
    }
    return MA_NOT_IMPLEMENTED;
}

static inline ma_result ma_decoder_read_pcm_frames(ma_decoder* pDecoder, void* pFramesOut, ma_uint64 frameCount, ma_uint64* pFramesRead)
{
    (void)pDecoder;
    (void)pFramesOut;
    (void)frameCount;
    if (pFramesRead != NULL) {
        *pFramesRead = 0;
    }
    return MA_NOT_IMPLEMENTED;
}

static inline ma_result ma_decoder_uninit(ma_decoder* pDecoder)
{
    (void)pDecoder;
    return MA_SUCCESS;
}

#endif /* CF_MINIAUDIO_STUB_H */
