//! A PNG writer for the figures: 8-bit RGB, no interlacing, every row with filter type 0 (None),
//! the image data one zlib stream (miniz_oxide, level 6), chunk checksums by crc32fast; the
//! format of the PNG specification (W3C, third edition, 2025), sections 5 (chunks), 11.2.1
//! (IHDR) and 10 (zlib compression). Not the `png` crate: through `fdeflate` it turns on
//! `simd-adler32/std`, which changes a crate burn depends on and so rebuilds burn in every target
//! folder; the two crates used here are already in the tree with the features they need.

/// The PNG file of a `width` × `height` picture given as RGB rows, top row first
/// (`rgb.len() == width × height × 3`). Panics when the length does not match.
pub fn encode_rgb(width: u32, height: u32, rgb: &[u8]) -> Vec<u8> {
    let row = width as usize * 3;
    assert_eq!(rgb.len(), row * height as usize, "RGB buffer size");
    let mut raw = Vec::with_capacity((row + 1) * height as usize);
    for r in rgb.chunks(row.max(1)).take(height as usize) {
        raw.push(0); // filter type None
        raw.extend_from_slice(r);
    }
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    // bit depth 8, colour type 2 (truecolour), compression 0, filter method 0, no interlace
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(
        &mut out,
        b"IDAT",
        &miniz_oxide::deflate::compress_to_vec_zlib(&raw, 6),
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

/// Append one chunk: length, type, data, CRC-32 of type and data.
fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut h = crc32fast::Hasher::new();
    h.update(kind);
    h.update(data);
    out.extend_from_slice(&h.finalize().to_be_bytes());
}

/// A PNG as [`encode_rgb`] writes it, read back: (width, height, RGB rows). Checks the
/// signature, every chunk's CRC, the header (8-bit RGB, no interlacing), that the image data
/// inflates to exactly one filter byte and `width × 3` bytes per row, and undoes the filters
/// None, Sub and Up. For tests; errors say what is wrong.
pub fn decode_rgb(png: &[u8]) -> Result<(u32, u32, Vec<u8>), String> {
    let rest = png
        .strip_prefix(b"\x89PNG\r\n\x1a\n".as_slice())
        .ok_or("no PNG signature")?;
    let (mut i, mut header, mut idat, mut ended) = (0, None, Vec::new(), false);
    while i < rest.len() {
        let at = |a: usize, b: usize| rest.get(a..b).ok_or("a truncated chunk");
        let len = u32::from_be_bytes(at(i, i + 4)?.try_into().unwrap()) as usize;
        let kind = at(i + 4, i + 8)?;
        let data = at(i + 8, i + 8 + len)?;
        let crc = u32::from_be_bytes(at(i + 8 + len, i + 12 + len)?.try_into().unwrap());
        let mut h = crc32fast::Hasher::new();
        h.update(kind);
        h.update(data);
        if h.finalize() != crc {
            return Err(format!(
                "chunk {} fails its CRC",
                String::from_utf8_lossy(kind)
            ));
        }
        match kind {
            b"IHDR" => {
                let w = u32::from_be_bytes(data[0..4].try_into().unwrap());
                let hgt = u32::from_be_bytes(data[4..8].try_into().unwrap());
                if data[8..13] != [8, 2, 0, 0, 0] {
                    return Err(format!(
                        "not 8-bit RGB without interlacing: {:?}",
                        &data[8..13]
                    ));
                }
                header = Some((w, hgt));
            }
            b"IDAT" => idat.extend_from_slice(data),
            b"IEND" => ended = true,
            _ => {}
        }
        i += 12 + len;
    }
    let (w, h) = header.ok_or("no IHDR")?;
    if !ended {
        return Err("no IEND".into());
    }
    let raw = miniz_oxide::inflate::decompress_to_vec_zlib(&idat)
        .map_err(|e| format!("image data does not inflate: {e:?}"))?;
    let row = w as usize * 3;
    if raw.len() != (row + 1) * h as usize {
        return Err(format!("{} bytes of image data for {w} × {h}", raw.len()));
    }
    let mut rgb = vec![0u8; row * h as usize];
    for y in 0..h as usize {
        let f = raw[y * (row + 1)];
        let src = &raw[y * (row + 1) + 1..(y + 1) * (row + 1)];
        for x in 0..row {
            let left = if x >= 3 { rgb[y * row + x - 3] } else { 0 };
            let up = if y > 0 { rgb[(y - 1) * row + x] } else { 0 };
            rgb[y * row + x] = match f {
                0 => src[x],
                1 => src[x].wrapping_add(left),
                2 => src[x].wrapping_add(up),
                _ => return Err(format!("filter type {f} in row {y}")),
            };
        }
    }
    Ok((w, h, rgb))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3 × 2 picture survives the round trip, and its bytes are those of the format: the
    /// signature, IHDR first with the size, IEND last with the fixed CRC of an empty IEND.
    #[test]
    fn a_small_picture_round_trips() {
        let rgb: Vec<u8> = (0..18).map(|i| (i * 14) as u8).collect();
        let png = encode_rgb(3, 2, &rgb);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[8..16], b"\0\0\0\x0dIHDR");
        assert_eq!(&png[16..24], &[0, 0, 0, 3, 0, 0, 0, 2]);
        assert_eq!(&png[png.len() - 12..], b"\0\0\0\0IEND\xae\x42\x60\x82");
        assert_eq!(decode_rgb(&png).unwrap(), (3, 2, rgb));
    }

    #[test]
    fn a_flipped_bit_fails_the_crc() {
        let mut png = encode_rgb(2, 2, &[255; 12]);
        png[20] ^= 1; // inside IHDR's data
        assert_eq!(decode_rgb(&png).unwrap_err(), "chunk IHDR fails its CRC");
    }

    #[test]
    #[should_panic(expected = "RGB buffer size")]
    fn a_buffer_of_the_wrong_size_is_a_bug() {
        encode_rgb(2, 2, &[0; 11]);
    }
}
