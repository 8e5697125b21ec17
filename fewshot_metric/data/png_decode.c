/* Plain PNG files decoded by libpng, one at a time or a batch of files per call, for
 * fewshot_metric/data/png.py (ctypes; the GIL is released during a call, so a batch can be
 * split over threads). For small images the per-image cost of decoding through Python
 * (the file read, the checks, a decoder call) is several times libpng's own; here a batch of
 * files costs one call.
 *
 * "Plain": a PNG whose pixels need no conversion beyond libpng's scaling of low-bit grey,
 * so they are exactly those PIL gives: grey of 1, 2, 4 or 8 bits when one channel is wanted,
 * 8-bit RGB when three are; only chunks PIL reads nothing from that changes the pixels or
 * refuses the file over (text chunks can hold an EXIF or XMP orientation, and PIL rejects
 * bad CRCs where libpng only warns), every CRC right. Anything else, and any libpng error
 * or warning, is reported as not decoded: the caller hands the file to PIL, which decodes
 * it or says why it cannot. */
#include <fcntl.h>
#include <png.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define MAX_FILE_BYTES (64 << 20) /* larger files go to PIL */
#define MAX_SIDE 1000000          /* libpng's default limit on width and height */

static const uint8_t SIGNATURE[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
static const char PLAIN_CHUNKS[][5] = {"IHDR", "IDAT", "IEND", "gAMA", "cHRM", "sRGB",
                                       "sBIT", "pHYs", "tIME", "bKGD", "tRNS"};

static uint32_t big_endian(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int plain_chunk(const uint8_t *kind) {
    for (size_t i = 0; i < sizeof PLAIN_CHUNKS / sizeof PLAIN_CHUNKS[0]; i++)
        if (memcmp(kind, PLAIN_CHUNKS[i], 4) == 0) return 1;
    return 0;
}

/* Whether data is a PNG of height x width in `channels` (grey of 1-8 bits for 1, 8-bit RGB
 * for 3) made of plain chunks up to IEND, every CRC but the image data's right (libpng
 * checks those). */
static int is_plain(const uint8_t *data, size_t size, int channels, int64_t height,
                    int64_t width) {
    if (height < 1 || width < 1 || height > MAX_SIDE || width > MAX_SIDE) return 0;
    if (size < 8 + 12 + 13 || memcmp(data, SIGNATURE, 8) != 0 || memcmp(data + 12, "IHDR", 4))
        return 0;
    int depth = data[24], colour = data[25];
    int wanted = colour == 0 && (depth == 1 || depth == 2 || depth == 4 || depth == 8) ? 1
                 : colour == 2 && depth == 8                                         ? 3
                                                                                     : 0;
    if (wanted != channels || big_endian(data + 16) != width || big_endian(data + 20) != height)
        return 0;
    for (size_t at = 8; at + 12 <= size;) {
        uint32_t length = big_endian(data + at);
        const uint8_t *kind = data + at + 4;
        if (!plain_chunk(kind) || length > size - at - 12) return 0;
        size_t end = at + 12 + length;
        if (memcmp(kind, "IDAT", 4) != 0 &&
            crc32(0, kind, length + 4) != big_endian(data + end - 4))
            return 0;
        if (memcmp(kind, "IEND", 4) == 0) return 1;
        at = end;
    }
    return 0;
}

typedef struct {
    const uint8_t *data;
    size_t size, at;
    int warned;
} source_t;

static void read_source(png_structp png, png_bytep out, size_t n) {
    source_t *source = png_get_io_ptr(png);
    if (n > source->size - source->at) png_error(png, "truncated");
    memcpy(out, source->data + source->at, n);
    source->at += n;
}

static void on_error(png_structp png, png_const_charp message) {
    (void)message;
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp message) {
    (void)message;
    ((source_t *)png_get_error_ptr(png))->warned = 1;
}

/* Decodes a plain PNG (is_plain) into out, uint8 [channels, height, width]; rgb is scratch
 * of height * width * 3 bytes when channels is 3. 1 when decoded, 0 otherwise. */
static int decode(const uint8_t *data, size_t size, int channels, int64_t height,
                  int64_t width, uint8_t *out, uint8_t *rgb) {
    if (!is_plain(data, size, channels, height, width)) return 0;
    source_t source = {data, size, 0, 0};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &source, on_error,
                                             on_warning);
    if (png == NULL) return 0;
    png_infop info = png_create_info_struct(png);
    png_bytep *rows = malloc(sizeof(png_bytep) * (size_t)height);
    if (info == NULL || rows == NULL || setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, info ? &info : NULL, NULL);
        free(rows);
        return 0;
    }
    png_set_benign_errors(png, 0);
    png_set_read_fn(png, &source, read_source);
    png_read_info(png, info);
    if (png_get_bit_depth(png, info) < 8) png_set_expand_gray_1_2_4_to_8(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int decoded = png_get_rowbytes(png, info) == (size_t)(width * channels);
    if (decoded) {
        uint8_t *pixels = channels == 1 ? out : rgb; /* rows of [width, channels] */
        for (int64_t y = 0; y < height; y++) rows[y] = pixels + y * width * channels;
        png_read_image(png, rows);
        png_read_end(png, info); /* checks the chunks after the image data, as PIL does */
        decoded = !source.warned;
    }
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    if (decoded && channels == 3) { /* [height * width, 3] -> [3, height * width] */
        int64_t plane = height * width;
        for (int64_t p = 0; p < plane; p++)
            for (int c = 0; c < 3; c++) out[c * plane + p] = rgb[3 * p + c];
    }
    return decoded;
}

/* Whether data is a plain PNG of height x width in `channels` (1 or 0), before decoding. */
int fsm_png_is_plain(const uint8_t *data, int64_t size, int channels, int64_t height,
                     int64_t width) {
    return is_plain(data, (size_t)size, channels, height, width);
}

/* One PNG in memory: 1 when decoded into out, uint8 [channels, height, width]; 0 when it is
 * not a plain PNG of that size (or -1: no memory). */
int fsm_png_decode(const uint8_t *data, int64_t size, int channels, int64_t height,
                   int64_t width, uint8_t *out) {
    uint8_t *rgb = channels == 3 ? malloc((size_t)(height * width * 3)) : NULL;
    if (channels == 3 && rgb == NULL) return -1;
    int decoded = decode(data, (size_t)size, channels, height, width, out, rgb);
    free(rgb);
    return decoded;
}

/* Reads the file at path into *buffer (grown as needed, *capacity bytes); its size, or -1
 * when it cannot be read, is empty or is larger than MAX_FILE_BYTES. */
static int64_t read_file(const char *path, uint8_t **buffer, size_t *capacity) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    struct stat status;
    int64_t size = -1;
    if (fstat(fd, &status) == 0 && S_ISREG(status.st_mode) && status.st_size > 0 &&
        status.st_size <= MAX_FILE_BYTES) {
        size_t wanted = (size_t)status.st_size;
        if (wanted > *capacity) {
            uint8_t *grown = realloc(*buffer, wanted);
            if (grown != NULL) *buffer = grown, *capacity = wanted;
        }
        size_t got = 0;
        while (wanted <= *capacity && got < wanted) {
            ssize_t n = read(fd, *buffer + got, wanted - got);
            if (n <= 0) break;
            got += (size_t)n;
        }
        if (wanted <= *capacity && got == wanted) size = (int64_t)got;
    }
    close(fd);
    return size;
}

/* n files (NUL-terminated paths): each plain PNG of height x width in `channels` is decoded
 * into its slot of out, uint8 [n, channels, height, width], and its decoded[i] set to 1; the
 * others' are set to 0 (their slots are left as they were). Returns how many were decoded,
 * or -1: no memory. */
int64_t fsm_png_decode_files(const char *const *paths, int64_t n, int channels, int64_t height,
                             int64_t width, uint8_t *out, uint8_t *decoded) {
    size_t capacity = 1 << 16, image = (size_t)(channels * height * width);
    uint8_t *buffer = malloc(capacity);
    uint8_t *rgb = channels == 3 ? malloc((size_t)(height * width * 3)) : NULL;
    int64_t count = -1;
    if (buffer != NULL && (channels != 3 || rgb != NULL)) {
        count = 0;
        for (int64_t i = 0; i < n; i++) {
            int64_t size = read_file(paths[i], &buffer, &capacity);
            decoded[i] = size > 0 && decode(buffer, (size_t)size, channels, height, width,
                                            out + i * image, rgb);
            count += decoded[i];
        }
    }
    free(buffer);
    free(rgb);
    return count;
}
