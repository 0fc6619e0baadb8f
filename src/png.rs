//! PNG files of the figures, through the `png` crate (image-rs): 8-bit RGB, the encoder's
//! default compression and filtering.

/// The PNG file of a `width` × `height` picture given as RGB rows, top row first
/// (`rgb.len() == width × height × 3`). Panics when the length does not match (a bug of the
/// caller, which drew the buffer).
pub fn encode_rgb(width: u32, height: u32, rgb: &[u8]) -> Vec<u8> {
    assert_eq!(
        rgb.len(),
        width as usize * height as usize * 3,
        "RGB buffer size"
    );
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    // Writing into memory fails only on a malformed picture, which the assertion rules out.
    let mut w = enc.write_header().expect("PNG header of a valid size");
    w.write_image_data(rgb)
        .expect("PNG image data of the declared size");
    w.finish().expect("PNG end");
    out
}

/// A PNG read back by the `png` crate's decoder as (width, height, RGB rows); errors say what
/// is wrong (a bad signature, a failed CRC, a colour type other than 8-bit RGB). For tests.
pub fn decode_rgb(bytes: &[u8]) -> Result<(u32, u32, Vec<u8>), String> {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .map_err(|e| e.to_string())?;
    let size = reader
        .output_buffer_size()
        .ok_or("the picture is too large")?;
    let mut buf = vec![0; size];
    let info = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    if info.color_type != png::ColorType::Rgb || info.bit_depth != png::BitDepth::Eight {
        return Err(format!(
            "not 8-bit RGB: {:?} {:?}",
            info.color_type, info.bit_depth
        ));
    }
    buf.truncate(info.buffer_size());
    Ok((info.width, info.height, buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3 × 2 picture survives the round trip, and the file opens with the PNG signature and
    /// the IHDR chunk that gives its size.
    #[test]
    fn a_small_picture_round_trips() {
        let rgb: Vec<u8> = (0..18).map(|i| (i * 14) as u8).collect();
        let png = encode_rgb(3, 2, &rgb);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[8..16], b"\0\0\0\x0dIHDR");
        assert_eq!(&png[16..24], &[0, 0, 0, 3, 0, 0, 0, 2]);
        assert_eq!(decode_rgb(&png).unwrap(), (3, 2, rgb));
    }

    #[test]
    fn a_flipped_bit_fails_the_crc() {
        let mut png = encode_rgb(2, 2, &[255; 12]);
        png[20] ^= 1; // inside IHDR's data
        let e = decode_rgb(&png).unwrap_err();
        assert!(e.to_lowercase().contains("crc"), "{e}");
    }

    #[test]
    #[should_panic(expected = "RGB buffer size")]
    fn a_buffer_of_the_wrong_size_is_a_bug() {
        encode_rgb(2, 2, &[0; 11]);
    }
}
